package main

import (
	"strings"
	"testing"
	"time"
)

var required = []string{"--rds-address=10.0.0.5", "--rds-user=csi", "--rds-private-key=/key", "--base-path=/storage-pool/csi"}

func TestFencingFlagsDefaultToAttachmentsInTheClusterWithoutTargetFencing(t *testing.T) {
	f, err := parseFlags(required)
	if err != nil {
		t.Fatal(err)
	}
	if f.attachmentState != stateKubernetes || f.driver.TargetFencing || f.driver.RWOGracePeriod != 10*time.Second {
		t.Errorf("attachment state %q, target fencing %v, grace %s; want kubernetes, off, 10s", f.attachmentState, f.driver.TargetFencing, f.driver.RWOGracePeriod)
	}
}

func TestFencingFlagsAreValidated(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		mention string
	}{
		{[]string{"--attachment-state=disk"}, "--attachment-state"},
		{[]string{"--attachment-state=memory", "--kubeconfig=/kc"}, "--kubeconfig"},
		{[]string{"--rwo-grace-period=-1s"}, "grace period"},
		{[]string{"--rwo-grace-period=1h"}, "grace period"},
	} {
		_, err := parseFlags(append(append([]string{}, required...), tt.args...))
		if err == nil || !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("%v: error %v, want one mentioning %q", tt.args, err, tt.mention)
		}
	}
	f, err := parseFlags(append(append([]string{}, required...), "--target-fencing", "--rwo-grace-period=3s", "--attachment-state=memory"))
	if err != nil {
		t.Fatal(err)
	}
	if !f.driver.TargetFencing || f.driver.RWOGracePeriod != 3*time.Second || f.attachmentState != stateMemory {
		t.Errorf("flags not taken: %+v", f)
	}
}
