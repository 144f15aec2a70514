// Package cluster runs a real Kubernetes control plane for tests, without a
// kubelet or containers: etcd, kube-apiserver and, optionally,
// kube-controller-manager as processes on loopback, each test with its own
// ports, data directory, certificates and tokens. It also starts the rds-csi
// controller and the real CSI sidecars (csi-provisioner, csi-attacher)
// against that cluster, and has helpers to create and wait for the objects
// the flows use. docs/testing.md describes the test bed.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/rds-csi/rds-csi/test/k8s/binaries"
)

const (
	// AdminUser is the test's own identity, in system:masters.
	AdminUser = "admin"
	// ControllerManagerUser is kube-controller-manager's identity. Without
	// --use-service-account-credentials its controllers act as it, so it is
	// in system:masters too.
	ControllerManagerUser = "system:kube-controller-manager"
	// MastersGroup is the group RBAC allows everything.
	MastersGroup = "system:masters"

	etcdReadyTimeout      = 60 * time.Second
	apiserverReadyTimeout = 120 * time.Second
	kcmReadyTimeout       = 60 * time.Second
	// portAttempts: a free port can be taken by another test bed between
	// choosing it and binding it; the server is started again on new ports.
	portAttempts = 3
)

// controllers are the kube-controller-manager controllers the CSI flows
// need: binding PVCs to PVs, the protection finalizers, attach-detach for
// Pod-driven VolumeAttachments, and default service accounts for Pods.
var controllers = []string{
	"persistentvolume-binder-controller",
	"persistentvolume-protection-controller",
	"persistentvolumeclaim-protection-controller",
	"persistentvolume-attach-detach-controller",
	"serviceaccount-controller",
}

// Config configures a cluster.
type Config struct {
	// Binaries holds etcd, kube-apiserver and kube-controller-manager.
	Binaries binaries.Set
	// Authorization is the apiserver's --authorization-mode; RBAC if empty.
	Authorization string
	// ControllerManager starts kube-controller-manager. Without it a PVC is
	// not bound by itself: the test must do the binder's work.
	ControllerManager bool
	// Users are further identities, each with its groups; every user gets
	// a token and a kubeconfig (Kubeconfig). Tokens are fixed when the
	// apiserver starts.
	Users map[string][]string
}

// Cluster is a running control plane.
type Cluster struct {
	// Server is the apiserver's URL.
	Server string
	// Dir holds certificates, tokens, kubeconfigs and etcd's data.
	Dir string
	// LogDir holds every process's log; kept on failure (see newLogDir).
	LogDir string
	// Admin is a client acting as AdminUser.
	Admin kubernetes.Interface

	tokens map[string]string
	pki    *pki
}

// Start starts etcd, kube-apiserver and, if asked, kube-controller-manager,
// and waits until each is ready. Everything stops when t ends.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	for _, name := range []string{binaries.Etcd, binaries.KubeAPIServer} {
		if cfg.Binaries[name] == "" {
			t.Fatalf("cluster: no %s binary", name)
		}
	}
	if cfg.ControllerManager && cfg.Binaries[binaries.KubeControllerManager] == "" {
		t.Fatalf("cluster: no %s binary", binaries.KubeControllerManager)
	}
	if cfg.Authorization == "" {
		cfg.Authorization = "RBAC"
	}
	c := &Cluster{Dir: t.TempDir(), LogDir: newLogDir(t), tokens: map[string]string{}}
	var err error
	if c.pki, err = newPKI(c.Dir); err != nil {
		t.Fatal(err)
	}
	users := map[string][]string{AdminUser: {MastersGroup}, ControllerManagerUser: {MastersGroup}}
	for u, groups := range cfg.Users {
		users[u] = groups
	}
	tokenFile, err := c.writeTokens(users)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	etcdData := filepath.Join(c.Dir, "etcd")
	_, etcdPorts := startServer(t, c.LogDir, 2, etcdReadyTimeout, func(ports []int) ProcessSpec {
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		// A retry must not find the data of a half-started member.
		_ = os.RemoveAll(etcdData)
		return ProcessSpec{Name: "etcd", Path: cfg.Binaries[binaries.Etcd], Args: []string{
			"--name=bed", "--data-dir=" + etcdData,
			"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=bed=" + peer,
			// Test data: durability is not worth the fsyncs.
			"--unsafe-no-fsync", "--log-level=warn",
		}}
	}, func(ctx context.Context, ports []int) error {
		return httpReady(ctx, plainHTTP, fmt.Sprintf("http://127.0.0.1:%d/health", ports[0]), "", `"health":"true"`)
	})
	t.Logf("cluster: etcd ready on 127.0.0.1:%d after %s", etcdPorts[0], since(start))

	apiStart := time.Now()
	trusted := x509.NewCertPool()
	trusted.AppendCertsFromPEM(c.pki.CAPEM)
	apiClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trusted}}}
	_, apiPorts := startServer(t, c.LogDir, 1, apiserverReadyTimeout, func(ports []int) ProcessSpec {
		return ProcessSpec{Name: "kube-apiserver", Path: cfg.Binaries[binaries.KubeAPIServer], Args: []string{
			fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPorts[0]),
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", ports[0]),
			"--tls-cert-file=" + c.pki.ServingCert, "--tls-private-key-file=" + c.pki.ServingKey,
			"--token-auth-file=" + tokenFile,
			"--authorization-mode=" + cfg.Authorization,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + c.pki.ServiceAccountPub,
			"--service-account-signing-key-file=" + c.pki.ServiceAccountKey,
			"--service-cluster-ip-range=10.96.0.0/24",
			// No Service endpoints: nothing runs behind the kubernetes
			// Service, and reconciling it would only add noise.
			"--endpoint-reconciler-type=none",
			// As kubeadm and the distributions run it: the node agent's
			// DaemonSet is privileged.
			"--allow-privileged=true",
			"--profiling=false",
			"--v=1",
		}}
	}, func(ctx context.Context, ports []int) error {
		return httpReady(ctx, apiClient, fmt.Sprintf("https://127.0.0.1:%d/readyz", ports[0]), c.tokens[AdminUser], "ok")
	})
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", apiPorts[0])
	t.Logf("cluster: kube-apiserver ready at %s (authorization %s) after %s", c.Server, cfg.Authorization, since(apiStart))

	for u := range users {
		if _, err := c.writeKubeconfig(u); err != nil {
			t.Fatal(err)
		}
	}
	c.Admin = c.Client(t, AdminUser)

	if cfg.ControllerManager {
		kcmStart := time.Now()
		insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			// The controller manager's serving certificate is self-signed;
			// the probe only asks whether it is healthy.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		}}
		startServer(t, c.LogDir, 1, kcmReadyTimeout, func(ports []int) ProcessSpec {
			return ProcessSpec{Name: "kube-controller-manager", Path: cfg.Binaries[binaries.KubeControllerManager], Args: []string{
				"--kubeconfig=" + c.Kubeconfig(ControllerManagerUser),
				"--leader-elect=false",
				"--bind-address=127.0.0.1",
				fmt.Sprintf("--secure-port=%d", ports[0]),
				"--controllers=" + strings.Join(controllers, ","),
				"--v=2",
			}}
		}, func(ctx context.Context, ports []int) error {
			return httpReady(ctx, insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0]), "", "ok")
		})
		t.Logf("cluster: kube-controller-manager ready (%s) after %s", strings.Join(controllers, ", "), since(kcmStart))
	}
	return c
}

// Kubeconfig returns the path of user's kubeconfig; the user must have been
// declared in Config.Users (or be AdminUser or ControllerManagerUser).
func (c *Cluster) Kubeconfig(user string) string {
	return filepath.Join(c.Dir, "kubeconfig-"+fileName(user))
}

// Client returns a clientset acting as user. Every request has a 30 s
// deadline.
func (c *Cluster) Client(t testing.TB, user string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig(user))
	if err != nil {
		t.Fatalf("kubeconfig of %s: %v", user, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 30 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// writeTokens writes the apiserver's static token file: token,user,uid,"groups".
func (c *Cluster) writeTokens(users map[string][]string) (string, error) {
	var b strings.Builder
	for user, groups := range users {
		if strings.ContainsAny(user, ",\"\n") {
			return "", fmt.Errorf("user name %q cannot go in a token file", user)
		}
		raw := make([]byte, 16)
		if _, err := rand.Read(raw); err != nil {
			return "", err
		}
		token := hex.EncodeToString(raw)
		c.tokens[user] = token
		fmt.Fprintf(&b, "%s,%s,%s,%q\n", token, user, user, strings.Join(groups, ","))
	}
	path := filepath.Join(c.Dir, "tokens.csv")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

func (c *Cluster) writeKubeconfig(user string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bed"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.pki.CAPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: c.tokens[user]}
	cfg.Contexts["bed"] = &clientcmdapi.Context{Cluster: "bed", AuthInfo: user}
	cfg.CurrentContext = "bed"
	path := c.Kubeconfig(user)
	return path, clientcmd.WriteToFile(*cfg, path)
}

// startServer starts the process spec returns for nPorts free loopback
// ports and waits until ready succeeds. A port taken meanwhile by someone
// else ("address already in use") is retried on new ports; anything else
// that ends the process, or the timeout, fails the test with its log.
func startServer(t testing.TB, logDir string, nPorts int, timeout time.Duration, spec func(ports []int) ProcessSpec, ready func(ctx context.Context, ports []int) error) (*Process, []int) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(nPorts)
		if err != nil {
			t.Fatal(err)
		}
		s := spec(ports)
		s.LogDir = logDir
		p := NewProcess(s)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		err = waitReady(t.Context(), p, timeout, func(ctx context.Context) error { return ready(ctx, ports) })
		if err == nil {
			t.Cleanup(func() {
				if err := p.Stop(); err != nil {
					t.Error(err)
				}
			})
			return p, ports
		}
		_ = p.Kill()
		log := tail(p.LogPath(), 40)
		if strings.Contains(log, "address already in use") && attempt < portAttempts {
			t.Logf("cluster: %s lost a port race (%v), trying other ports", s.Name, ports)
			continue
		}
		t.Fatalf("cluster: %s not ready: %v\n--- last lines of %s ---\n%s", s.Name, err, p.LogPath(), log)
	}
}

// waitReady polls ready until it succeeds, the process exits or timeout
// passes.
func waitReady(ctx context.Context, p *Process, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	exited := p.Exited()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = ready(ctx); last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited (last check: %w)", p.Name(), last)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", timeout, last)
		case <-tick.C:
		}
	}
}

var plainHTTP = &http.Client{Timeout: 5 * time.Second}

// httpReady GETs url (with a bearer token if given) and wants 200 with want
// in the body.
func httpReady(ctx context.Context, client *http.Client, url, token, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s: %.300s", url, resp.Status, body)
	}
	return nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		_, port, err := net.SplitHostPort(l.Addr().String())
		if err != nil {
			return nil, err
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// newLogDir returns the directory for t's process logs. With
// RDS_CSI_K8S_LOGDIR set it is a directory named after the test under it,
// and kept. Otherwise it is a temporary directory, removed when the test
// passes; when it fails, the last lines of every log are printed and the
// directory is kept.
func newLogDir(t testing.TB) string {
	t.Helper()
	name := fileName(t.Name())
	var dir string
	keep := false
	if root := os.Getenv("RDS_CSI_K8S_LOGDIR"); root != "" {
		dir, keep = filepath.Join(root, name), true
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		var err error
		if dir, err = os.MkdirTemp("", "rds-csi-k8s-"+name+"-"); err != nil {
			t.Fatal(err)
		}
	}
	// Registered first, so it runs after every process has stopped.
	t.Cleanup(func() {
		if !t.Failed() {
			if !keep {
				_ = os.RemoveAll(dir)
			}
			return
		}
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, l := range logs {
			t.Logf("--- last lines of %s ---\n%s", l, tail(l, 60))
		}
		t.Logf("the logs of this failed test are kept in %s", dir)
	})
	return dir
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// fileName makes s usable as a file name.
func fileName(s string) string {
	return unsafeChars.ReplaceAllString(s, "_")
}

func logPath(dir, name string) string {
	return filepath.Join(dir, fileName(name)+".log")
}

// tail returns the last n lines of the file at path (of its last 1 MiB).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer func() { _ = f.Close() }()
	const window = 1 << 20
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		_, _ = f.Seek(fi.Size()-window, io.SeekStart)
	}
	data, err := io.ReadAll(f)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func since(t time.Time) time.Duration {
	return time.Since(t).Round(10 * time.Millisecond)
}
