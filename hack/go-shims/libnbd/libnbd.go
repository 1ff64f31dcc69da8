// Package libnbd stands in for libguestfs.org/libnbd (see ../README.md): every call fails.
package libnbd

import "errors"

var errStandIn = errors.New("slirp-conformance: libnbd is a build stand-in (no NBD export here)")

const (
	CONTEXT_BASE_ALLOCATION   = "base:allocation"
	CONTEXT_QEMU_DIRTY_BITMAP = "qemu:dirty-bitmap:"
	STATE_HOLE                = uint32(1)
	STATE_ZERO                = uint32(2)
	STATE_DIRTY               = uint32(1)
)

type LibnbdExtent struct {
	Length uint64
	Flags  uint64
}

type ExtentCallback64 func(metacontext string, offset uint64, entries []LibnbdExtent, error *int) int

type BlockStatus64Optargs struct{}
type PreadOptargs struct{}

type Libnbd struct{}

func Create() (*Libnbd, error)                           { return nil, errStandIn }
func (*Libnbd) Close() error                             { return nil }
func (*Libnbd) AddMetaContext(string) error              { return errStandIn }
func (*Libnbd) CanMetaContext(string) (bool, error)      { return false, errStandIn }
func (*Libnbd) SetExportName(string) error               { return errStandIn }
func (*Libnbd) ConnectUnix(string) error                 { return errStandIn }
func (*Libnbd) GetSize() (uint64, error)                 { return 0, errStandIn }
func (*Libnbd) Pread([]byte, uint64, *PreadOptargs) error { return errStandIn }
func (*Libnbd) BlockStatus64(uint64, uint64, ExtentCallback64, *BlockStatus64Optargs) error {
	return errStandIn
}
