package packaging

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/rds-csi/rds-csi/controller"
)

// kustomizeFiles decodes every YAML file under deploy/kubernetes except the
// kustomization itself (kustomize reads that; test/k8s builds it).
func kustomizeFiles(t *testing.T) map[string][]Object {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "deploy", "kubernetes")
	files := map[string][]Object{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") || d.Name() == "kustomization.yaml" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		objs, err := Decode(rel, data)
		if err != nil {
			return err
		}
		files[rel] = objs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func all(files map[string][]Object) []Object {
	var objs []Object
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	}) {
		objs = append(objs, files[name]...)
	}
	return objs
}

func find[T any](t *testing.T, objs []Object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.GVK.Kind == kind && o.Unstructured.GetName() == name {
			if v, ok := o.Typed.(T); ok {
				return v
			}
		}
	}
	var zero T
	t.Fatalf("no %s %s in deploy/kubernetes", kind, name)
	return zero
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	files := kustomizeFiles(t)
	for name, objs := range files {
		for _, o := range objs {
			t.Logf("%s: %s", name, o.Key())
		}
	}
	if len(files) < 8 {
		t.Fatalf("only %d manifest files found", len(files))
	}
}

func TestStrictDecodingRejectsWhatTheAPIServerWouldDrop(t *testing.T) {
	for name, doc := range map[string]string{
		"an unknown field":    "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: x}\nspec: {attachRequired: true, storageCapacityy: false}\n",
		"a duplicate field":   "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\nmetadata: {name: y}\n",
		"a misplaced field":   "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {hostNetwork: true}\n",
		"an unknown kind":     "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
		"a CRD field typo":    "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {endpoints: [{port: metrics, intervall: 30s}]}\n",
		"a wrongly typed one": "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: x}\nspec: {attachRequired: \"yes\"}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(name, []byte(doc)); err == nil {
				t.Fatal("decoded without error")
			} else {
				t.Log(err)
			}
		})
	}
}

func containerArgs(c corev1.Container) map[string]string {
	args := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		args[k] = v
	}
	return args
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// The earlier driver said storageCapacity: true without producing capacity
// objects: every WaitForFirstConsumer pod stayed unschedulable.
func TestTheCSIDriverAgreesWithTheSidecars(t *testing.T) {
	objs := all(kustomizeFiles(t))
	driver := find[*storagev1.CSIDriver](t, objs, "CSIDriver", "rds.csi.dev")
	ctrl := find[*appsv1.Deployment](t, objs, "Deployment", "rds-csi-controller").Spec.Template.Spec
	_, capacity := containerArgs(container(t, ctrl, "csi-provisioner"))["enable-capacity"]
	if *driver.Spec.StorageCapacity != capacity {
		t.Errorf("CSIDriver storageCapacity is %v, but the provisioner's --enable-capacity is %v", *driver.Spec.StorageCapacity, capacity)
	}
	if !*driver.Spec.AttachRequired {
		t.Error("attachRequired is false: VolumeAttachments would skip ControllerPublish (fencing, migrations)")
	}
	_, attacher := containerArgs(container(t, ctrl, "csi-attacher"))["csi-address"]
	if !attacher {
		t.Error("attachRequired without a csi-attacher: every attachment would hang")
	}
	if _, ok := containerArgs(container(t, ctrl, "csi-provisioner"))["extra-create-metadata"]; !ok {
		t.Error("the provisioner lacks --extra-create-metadata: the agent's Events would have no PVC")
	}
	for _, name := range []string{"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"} {
		if _, ok := containerArgs(container(t, ctrl, name))["leader-election"]; !ok {
			t.Errorf("%s runs without --leader-election", name)
		}
	}
	node := find[*appsv1.DaemonSet](t, objs, "DaemonSet", "rds-csi-node").Spec.Template.Spec
	for _, spec := range []corev1.PodSpec{ctrl, node} {
		for _, c := range spec.Containers {
			if dn, ok := containerArgs(c)["driver-name"]; ok && dn != driver.Name {
				t.Errorf("%s runs with --driver-name=%s, the CSIDriver is %s", c.Name, dn, driver.Name)
			}
		}
	}
	reg := containerArgs(container(t, node, "node-driver-registrar"))["kubelet-registration-path"]
	if want := "/var/lib/kubelet/plugins/" + driver.Name + "/csi.sock"; reg != want {
		t.Errorf("registration path %s, want %s", reg, want)
	}
}

// Each pod's livenessProbe reaches the port its livenessprobe sidecar
// serves: the earlier driver ran the sidecar and nobody asked it.
func TestTheLivenessProbesAreWiredToTheLivenessprobeSidecars(t *testing.T) {
	objs := all(kustomizeFiles(t))
	for _, spec := range []struct {
		name string
		pod  corev1.PodSpec
		main string
	}{
		{"controller", find[*appsv1.Deployment](t, objs, "Deployment", "rds-csi-controller").Spec.Template.Spec, "rds-csi-controller"},
		{"node", find[*appsv1.DaemonSet](t, objs, "DaemonSet", "rds-csi-node").Spec.Template.Spec, "rds-csi-agent"},
	} {
		t.Run(spec.name, func(t *testing.T) {
			endpoint := containerArgs(container(t, spec.pod, "liveness-probe"))["http-endpoint"]
			main := container(t, spec.pod, spec.main)
			probe := main.LivenessProbe
			if probe == nil || probe.HTTPGet == nil {
				t.Fatalf("%s has no HTTP livenessProbe", spec.main)
			}
			port := probe.HTTPGet.Port.String()
			for _, p := range main.Ports {
				if p.Name == port {
					port = strconv.Itoa(int(p.ContainerPort))
				}
			}
			if ":"+port != endpoint || probe.HTTPGet.Path != "/healthz" {
				t.Errorf("livenessProbe asks :%s%s, the livenessprobe sidecar serves %s/healthz", port, probe.HTTPGet.Path, endpoint)
			}
		})
	}
}

// The DaemonSet mounts exactly the host paths the agent uses: the earlier
// driver's lacked some its code needed.
func TestTheNodeAgentGetsExactlyTheHostAccessItsCodeUses(t *testing.T) {
	objs := all(kustomizeFiles(t))
	pod := find[*appsv1.DaemonSet](t, objs, "DaemonSet", "rds-csi-node").Spec.Template.Spec
	if !pod.HostNetwork {
		t.Error("hostNetwork is off: the healing loop's rtnetlink link events would be the pod's, not the storage NICs'")
	}
	if !pod.HostPID {
		t.Error("hostPID is off: NodeUnstage's scan of /proc would miss processes of other pods holding a volume")
	}
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	want := map[string]string{
		"socket-dir":       "/var/lib/kubelet/plugins/rds.csi.dev",
		"registration-dir": "/var/lib/kubelet/plugins_registry",
		"kubelet-dir":      "/var/lib/kubelet", // --kubelet-dir: records, staging and publish targets
		"dev":              "/dev",             // --dev-dir: /dev/nvme-fabrics, /dev/mapper/control, device nodes
		"sys":              "/sys",             // --sys-root: controllers, namespaces, holders
	}
	if len(hostPaths) != len(want) {
		t.Errorf("host paths %v, want exactly %v", hostPaths, want)
	}
	for name, path := range want {
		if hostPaths[name] != path {
			t.Errorf("host path volume %s = %q, want %q", name, hostPaths[name], path)
		}
	}
	agent := container(t, pod, "rds-csi-agent")
	args := containerArgs(agent)
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range agent.VolumeMounts {
		mounts[m.Name] = m
	}
	if m := mounts["kubelet-dir"]; m.MountPath != args["kubelet-dir"] || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
		t.Errorf("the kubelet directory is mounted at %q (--kubelet-dir=%q) with propagation %v, want the same path, Bidirectional", m.MountPath, args["kubelet-dir"], m.MountPropagation)
	}
	if sc := agent.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Error("the agent is not privileged: it cannot write /dev/nvme-fabrics, mount or use the device-mapper")
	}
	if lim := agent.Resources.Limits.Memory(); lim.Value() < 4*32<<20 {
		t.Errorf("agent memory limit %s is below 4x the 32 MiB RSS target, while mkfs runs in the same cgroup", lim)
	}
}

// Everything in the controller pod runs as non-root with a read-only root
// filesystem and no capabilities.
func TestTheControllerPodIsUnprivileged(t *testing.T) {
	objs := all(kustomizeFiles(t))
	pod := find[*appsv1.Deployment](t, objs, "Deployment", "rds-csi-controller").Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("the controller pod may run as root")
	}
	for _, c := range pod.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container %s: want readOnlyRootFilesystem, no privilege escalation, all capabilities dropped; got %+v", c.Name, sc)
		}
		if c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s has no memory limit", c.Name)
		}
	}
}

// The earlier driver's manifests carried a private SSH key inline. Nothing
// under deploy/, docs/ or systemd/ may hold key material: private keys,
// public keys or known_hosts lines (base64 key blobs).
func TestNoKeyMaterialIsInTheRepository(t *testing.T) {
	keyish := regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----|(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+) AAAA[0-9A-Za-z+/]{20,}|SHA256:[0-9A-Za-z+/]{43}`)
	for _, dir := range []string{"deploy", "docs", "systemd", "README.md"} {
		_ = filepath.WalkDir(filepath.Join(repoRoot(t), dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Error(err)
				return nil
			}
			if m := keyish.Find(data); m != nil {
				t.Errorf("%s holds key material: %.40s...", path, m)
			}
			return nil
		})
	}
	if keyish.FindString("-----BEGIN OPENSSH PRIVATE KEY-----") == "" || keyish.FindString("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl") == "" {
		t.Fatal("the pattern does not match key material")
	}
}

// Every argument the manifests pass to the two binaries is one of their
// flags: each binary parses all its flags before --version prints.
func TestTheManifestsPassFlagsTheBinariesKnow(t *testing.T) {
	objs := all(kustomizeFiles(t))
	bin := builtBinaries(t)
	env := regexp.MustCompile(`\$\([A-Z_]+\)`)
	for _, pod := range []corev1.PodSpec{
		find[*appsv1.Deployment](t, objs, "Deployment", "rds-csi-controller").Spec.Template.Spec,
		find[*appsv1.DaemonSet](t, objs, "DaemonSet", "rds-csi-node").Spec.Template.Spec,
	} {
		c := pod.Containers[0]
		if len(c.Command) != 1 || !strings.HasPrefix(c.Command[0], "/usr/bin/") {
			t.Fatalf("container %s runs %q, want /usr/bin/<binary> (the Dockerfile's path)", c.Name, c.Command)
		}
		var args []string
		for _, a := range c.Args {
			args = append(args, env.ReplaceAllString(a, "x"))
		}
		out, err := exec.Command(filepath.Join(bin, filepath.Base(c.Command[0])), append(args, "--version")...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", c.Command[0], strings.Join(args, " "), err, out)
		}
	}
}

// The controller pod runs the sidecar of each capability the controller
// offers, and none for a capability it lacks: the earlier driver shipped
// without the attacher its ControllerPublish needed.
func TestTheControllerPodRunsTheSidecarsOfTheControllersCapabilities(t *testing.T) {
	resp, err := controller.New(controller.Options{}, nil).ControllerGetCapabilities(t.Context(), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	has := map[csi.ControllerServiceCapability_RPC_Type]bool{}
	for _, c := range resp.GetCapabilities() {
		has[c.GetRpc().GetType()] = true
	}
	objs := all(kustomizeFiles(t))
	pod := find[*appsv1.Deployment](t, objs, "Deployment", "rds-csi-controller").Spec.Template.Spec
	running := map[string]bool{}
	for _, c := range pod.Containers {
		running[c.Name] = true
	}
	for _, tc := range []struct {
		capability csi.ControllerServiceCapability_RPC_Type
		sidecar    string
	}{
		{csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME, "csi-provisioner"},
		{csi.ControllerServiceCapability_RPC_EXPAND_VOLUME, "csi-resizer"},
		// With a VolumeSnapshotClass example and the snapshotter's RBAC.
		{csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT, "csi-snapshotter"},
	} {
		if has[tc.capability] != running[tc.sidecar] {
			t.Errorf("the controller offers %s: %v; the pod runs %s: %v", tc.capability, has[tc.capability], tc.sidecar, running[tc.sidecar])
		}
	}
	// attachRequired is true ahead of ControllerPublish (the attacher
	// marks attachments attached until the controller offers it), but a
	// controller that offers it without an attacher would hang every pod.
	if has[csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME] && !running["csi-attacher"] {
		t.Error("the controller offers ControllerPublish and the pod runs no csi-attacher")
	}
}
