// Package guest holds the tests that run inside the qemu guest of the VM
// test bed, on a real kernel with the nvmet target and the nvme-tcp
// initiator. They are built only with the e2eguest tag (test/e2e builds
// and boots them); docs/testing.md describes them.
package guest
