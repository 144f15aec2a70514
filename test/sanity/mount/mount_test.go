package mount

import (
	"testing"

	"github.com/rds-csi/rds-csi/test/sanity"
)

func TestSanityFilesystemVolumes(t *testing.T) { sanity.Run(t, "mount") }
