package fabrics

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

const (
	testNQN     = "nqn.2000-02.com.mikrotik:pvc-a"
	testHostNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001"
	testHostID  = "00000000-0000-0000-0000-000000000001"
)

func validOptions() Options {
	return Options{
		Transport: "tcp", TrAddr: "10.0.0.5", TrSvcID: "4420",
		NQN: testNQN, HostNQN: testHostNQN, HostID: testHostID,
		CtrlLossTmo: -1, ReconnectDelay: 5, KeepAliveTmo: 5, FastIOFailTmo: -1,
	}
}

func TestOptionsString(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Options)
		want   string
	}{
		{
			name:   "fast_io_fail_tmo off leaves its token out",
			modify: func(*Options) {},
			want: "transport=tcp,traddr=10.0.0.5,trsvcid=4420,nqn=" + testNQN + ",hostnqn=" + testHostNQN +
				",hostid=" + testHostID + ",ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=5",
		},
		{
			name:   "a fast_io_fail_tmo is appended",
			modify: func(o *Options) { o.FastIOFailTmo = 30; o.CtrlLossTmo = 600 },
			want: "transport=tcp,traddr=10.0.0.5,trsvcid=4420,nqn=" + testNQN + ",hostnqn=" + testHostNQN +
				",hostid=" + testHostID + ",ctrl_loss_tmo=600,reconnect_delay=5,keep_alive_tmo=5,fast_io_fail_tmo=30",
		},
		{
			name:   "a fast_io_fail_tmo of zero is written, not mistaken for unset",
			modify: func(o *Options) { o.FastIOFailTmo = 0 },
			want: "transport=tcp,traddr=10.0.0.5,trsvcid=4420,nqn=" + testNQN + ",hostnqn=" + testHostNQN +
				",hostid=" + testHostID + ",ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=5,fast_io_fail_tmo=0",
		},
		{
			name: "optional host binding and queue settings follow the tunables",
			modify: func(o *Options) {
				o.HostTrAddr, o.HostIface, o.NrIOQueues, o.QueueSize = "10.0.0.9", "eth1", 4, 128
			},
			want: "transport=tcp,traddr=10.0.0.5,trsvcid=4420,nqn=" + testNQN + ",hostnqn=" + testHostNQN +
				",hostid=" + testHostID + ",ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=5" +
				",host_traddr=10.0.0.9,host_iface=eth1,nr_io_queues=4,queue_size=128",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := validOptions()
			tc.modify(&o)
			if err := o.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := o.String(); got != tc.want {
				t.Fatalf("String() =\n %s\nwant\n %s", got, tc.want)
			}
			var keys []string
			for kv := range strings.SplitSeq(tc.want, ",") {
				k, _, _ := strings.Cut(kv, "=")
				keys = append(keys, k)
			}
			if got := strings.Join(o.Keys(), ","); got != strings.Join(keys, ",") {
				t.Fatalf("Keys() = %s, want %s", got, strings.Join(keys, ","))
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	longNQN := "nqn.2000-02.com.mikrotik:" + strings.Repeat("a", MaxNQNLen-len("nqn.2000-02.com.mikrotik:"))
	tests := []struct {
		name   string
		modify func(*Options)
		valid  bool
	}{
		{name: "the defaults of a managed volume are valid", modify: func(*Options) {}, valid: true},
		{name: "an IPv6 target is valid", modify: func(o *Options) { o.TrAddr = "fd00::5" }, valid: true},
		{name: "an RDMA transport is valid", modify: func(o *Options) { o.Transport = "rdma" }, valid: true},
		{name: "an NQN of exactly 223 bytes is valid", modify: func(o *Options) { o.NQN = longNQN }, valid: true},
		{name: "an uppercase host ID is valid", modify: func(o *Options) { o.HostID = "6B8E1A5E-9C2F-4C57-9D5E-1F6F0D6B9A10" }, valid: true},
		{name: "the extreme tunables are valid", modify: func(o *Options) {
			o.CtrlLossTmo, o.ReconnectDelay, o.KeepAliveTmo, o.FastIOFailTmo = 86400, 3600, 3600, 3600
		}, valid: true},

		{name: "an unknown transport is refused", modify: func(o *Options) { o.Transport = "fc" }},
		{name: "an empty transport is refused", modify: func(o *Options) { o.Transport = "" }},
		{name: "a traddr carrying another option is refused", modify: func(o *Options) { o.TrAddr = "10.0.0.5,nqn=" + testNQN }},
		{name: "a host name as traddr is refused because the kernel needs an address", modify: func(o *Options) { o.TrAddr = "rds.example.com" }},
		{name: "an IPv6 zone is refused because it could carry any interface name", modify: func(o *Options) { o.TrAddr = "fe80::1%eth0" }},
		{name: "the unspecified address is refused", modify: func(o *Options) { o.TrAddr = "0.0.0.0" }},
		{name: "an IPv4 address with leading zeros is refused", modify: func(o *Options) { o.TrAddr = "010.0.0.5" }},
		{name: "port 0 is refused", modify: func(o *Options) { o.TrSvcID = "0" }},
		{name: "port 65536 is refused", modify: func(o *Options) { o.TrSvcID = "65536" }},
		{name: "a port with a sign is refused", modify: func(o *Options) { o.TrSvcID = "+4420" }},
		{name: "a port with a leading zero is refused", modify: func(o *Options) { o.TrSvcID = "04420" }},
		{name: "a port followed by a newline is refused", modify: func(o *Options) { o.TrSvcID = "4420\nnqn=x" }},
		{name: "an NQN with a comma is refused", modify: func(o *Options) { o.NQN = testNQN + ",hostnqn=" + testHostNQN }},
		{name: "an NQN with an equals sign is refused", modify: func(o *Options) { o.NQN = testNQN + "=x" }},
		{name: "an NQN with a newline is refused", modify: func(o *Options) { o.NQN = testNQN + "\nduplicate_connect" }},
		{name: "an NQN with a space is refused", modify: func(o *Options) { o.NQN = testNQN + " x" }},
		{name: "an NQN of 224 bytes is refused", modify: func(o *Options) { o.NQN = longNQN + "a" }},
		{name: "an NQN without the date is refused", modify: func(o *Options) { o.NQN = "nqn.com.mikrotik:pvc-a" }},
		{name: "an NQN with month 13 is refused", modify: func(o *Options) { o.NQN = "nqn.2000-13.com.mikrotik:pvc-a" }},
		{name: "an NQN without a name after the domain is refused", modify: func(o *Options) { o.NQN = "nqn.2014-08.org.nvmexpress.discovery" }},
		{name: "an empty host NQN is refused", modify: func(o *Options) { o.HostNQN = "" }},
		{name: "a host ID that is not a UUID is refused", modify: func(o *Options) { o.HostID = "node-1" }},
		{name: "the nil UUID as host ID is refused", modify: func(o *Options) { o.HostID = "00000000-0000-0000-0000-000000000000" }},
		{name: "a ctrl_loss_tmo below -1 is refused", modify: func(o *Options) { o.CtrlLossTmo = -2 }},
		{name: "a ctrl_loss_tmo above a day is refused", modify: func(o *Options) { o.CtrlLossTmo = 86401 }},
		{name: "a reconnect_delay of zero is refused", modify: func(o *Options) { o.ReconnectDelay = 0 }},
		{name: "a keep_alive_tmo of zero is refused", modify: func(o *Options) { o.KeepAliveTmo = 0 }},
		{name: "a fast_io_fail_tmo below -1 is refused", modify: func(o *Options) { o.FastIOFailTmo = -2 }},
		{name: "a host_traddr that is not an address is refused", modify: func(o *Options) { o.HostTrAddr = "eth0" }},
		{name: "a host_iface with a comma is refused", modify: func(o *Options) { o.HostIface = "eth0,nqn=x" }},
		{name: "a host_iface longer than an interface name is refused", modify: func(o *Options) { o.HostIface = "abcdefghijklmnop" }},
		{name: "a queue size below the kernel minimum is refused", modify: func(o *Options) { o.QueueSize = 8 }},
		{name: "a negative number of I/O queues is refused", modify: func(o *Options) { o.NrIOQueues = -1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := validOptions()
			tc.modify(&o)
			err := o.Validate()
			if tc.valid && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tc.valid && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("Validate = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

// FuzzOptionsString proves that no field value can add, drop or change an
// option token: either Validate refuses the options, or the rendered string
// splits (at the kernel's separators ',' and '\n', then at '=') into exactly
// the intended keys with the intended values.
func FuzzOptionsString(f *testing.F) {
	f.Add("tcp", "10.0.0.5", "4420", testNQN, testHostNQN, testHostID, "", "", -1, 5, 5, -1, 0, 0)
	f.Add("tcp", "10.0.0.5,nqn=x", "4420", testNQN, testHostNQN, testHostID, "", "", -1, 5, 5, -1, 0, 0)
	f.Add("tcp", "fd00::5", "4420\n", testNQN+",duplicate_connect", testHostNQN, testHostID, "10.0.0.1", "eth0", 600, 1, 1, 0, 4, 16)
	f.Add("tcp", "10.0.0.5", "4420", testNQN+"=", testHostNQN+"\x00", testHostID, "fe80::1%a,b", "eth0=x", -1, 5, 5, 30, 1, 1024)
	f.Fuzz(func(t *testing.T, transport, traddr, trsvcid, nqn, hostnqn, hostid, hostTrAddr, hostIface string,
		ctrlLoss, reconnect, keepAlive, fastIOFail, nrIOQueues, queueSize int) {
		o := Options{
			Transport: transport, TrAddr: traddr, TrSvcID: trsvcid, NQN: nqn, HostNQN: hostnqn, HostID: hostid,
			CtrlLossTmo: ctrlLoss, ReconnectDelay: reconnect, KeepAliveTmo: keepAlive, FastIOFailTmo: fastIOFail,
			HostTrAddr: hostTrAddr, HostIface: hostIface, NrIOQueues: nrIOQueues, QueueSize: queueSize,
		}
		if o.Validate() != nil {
			return
		}
		want := map[string]string{
			"transport": transport, "traddr": traddr, "trsvcid": trsvcid,
			"nqn": nqn, "hostnqn": hostnqn, "hostid": hostid,
			"ctrl_loss_tmo": strconv.Itoa(ctrlLoss), "reconnect_delay": strconv.Itoa(reconnect), "keep_alive_tmo": strconv.Itoa(keepAlive),
		}
		if fastIOFail != -1 {
			want["fast_io_fail_tmo"] = strconv.Itoa(fastIOFail)
		}
		if hostTrAddr != "" {
			want["host_traddr"] = hostTrAddr
		}
		if hostIface != "" {
			want["host_iface"] = hostIface
		}
		if nrIOQueues != 0 {
			want["nr_io_queues"] = strconv.Itoa(nrIOQueues)
		}
		if queueSize != 0 {
			want["queue_size"] = strconv.Itoa(queueSize)
		}

		s := o.String()
		for i := 0; i < len(s); i++ {
			if s[i] <= ' ' || s[i] >= 0x7f {
				t.Fatalf("option string has byte %#x: %q", s[i], s)
			}
		}
		got := map[string]string{}
		// No byte at or below ' ' (so no '\n', the kernel's other separator) is
		// present, so splitting at ',' is the kernel's tokenisation.
		for _, tok := range strings.Split(s, ",") {
			parts := strings.Split(tok, "=")
			if len(parts) != 2 || parts[0] == "" {
				t.Fatalf("token %q of %q is not key=value", tok, s)
			}
			if _, dup := got[parts[0]]; dup {
				t.Fatalf("key %q twice in %q", parts[0], s)
			}
			got[parts[0]] = parts[1]
		}
		if len(got) != len(want) {
			t.Fatalf("%q has keys %v, want %v", s, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%q: %s=%q, want %q", s, k, got[k], v)
			}
		}
	})
}
