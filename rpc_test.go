package main

import (
	"errors"
	"fmt"
	"io"
	"net/rpc"
	"testing"
)

func TestFromRemote(t *testing.T) {
	type test struct {
		name string
		err  error
		want error // the sentinel errors.Is must find; nil for none
	}
	var tests []test
	for _, s := range sentinels {
		tests = append(tests,
			test{"Exact/" + s.Error(), rpc.ServerError(s.Error()), s},
			test{"Detail/" + s.Error(), rpc.ServerError(s.Error() + ": blk_0000000000000001 at offset 512"), s},
			// What a server sends for fmt.Errorf("%w: ...", ErrX).
			test{"Wrapped/" + s.Error(), rpc.ServerError(fmt.Errorf("%w: /a/b", s).Error()), s},
		)
	}
	tests = append(tests,
		test{"Unknown", rpc.ServerError("disk on fire"), nil},
		test{"Empty", rpc.ServerError(""), nil},
		test{"PrefixWithoutColon", rpc.ServerError(ErrNotFound.Error() + "system"), nil},
		// A forwarding minion puts its context in front.
		test{"AfterForwardContext", rpc.ServerError("forward to 127.0.0.1:9: " + ErrChecksum.Error() + ": at offset 512"), ErrChecksum},
		test{"AtEndAfterContext", rpc.ServerError("forward to 127.0.0.1:9: " + ErrChecksum.Error()), ErrChecksum},
		test{"InsideAWord", rpc.ServerError("xfile not foundx"), nil},
		test{"OSErrorText", rpc.ServerError("open /x: no such file or directory"), nil},
		test{"CaseDiffers", rpc.ServerError("File Not Found"), nil},
		test{"ClientWrapped", fmt.Errorf("call Master.Stat: %w", rpc.ServerError(ErrIsDir.Error()+": /d")), ErrIsDir},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fromRemote(tt.err)
			if got == nil {
				t.Fatal("fromRemote returned nil for an error")
			}
			if se, ok := tt.err.(rpc.ServerError); ok && got.Error() != string(se) {
				t.Errorf("Error() = %q, want the remote text %q", got.Error(), string(se))
			}
			for _, s := range sentinels {
				if is := errors.Is(got, s); is != (s == tt.want) {
					t.Errorf("errors.Is(%q, %q) = %v, want %v", got, s, is, !is)
				}
			}
		})
	}
}

func TestFromRemote_PassThrough(t *testing.T) {
	local := errors.New("dial tcp: connection refused")
	for _, err := range []error{local, io.EOF, io.ErrUnexpectedEOF, rpc.ErrShutdown, ErrNotFound, fmt.Errorf("wrapped: %w", ErrChecksum)} {
		if got := fromRemote(err); got != err {
			t.Errorf("fromRemote(%v) = %v (%T), want the same error unchanged", err, got, got)
		}
	}
	if got := fromRemote(nil); got != nil {
		t.Errorf("fromRemote(nil) = %v, want nil", got)
	}
}
