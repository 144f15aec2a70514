package block

import (
	"testing"

	"github.com/rds-csi/rds-csi/test/sanity"
)

func TestSanityBlockVolumes(t *testing.T) { sanity.Run(t, "block") }
