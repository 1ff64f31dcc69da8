// runc-wrapper runs the real runc after deleting, from every capability list of the OCI spec
// runc is about to apply, each capability that is not in this process's own bounding set.
//
// Why: on this project's machines the capability bounding set lacks CAP_SYS_RESOURCE, and
// runc refuses to start a container asked for a capability it cannot have ("unable to apply
// caps: operation not permitted"). Docker asks for every capability for `--privileged` (so kind
// nodes fail), and a pod that adds SYS_RESOURCE fails the same way inside a kind node. Set as
// dockerd's default runtime (fixtures/docker_daemon.py) and as containerd's runc BinaryName in
// the kind node image, it lets those containers start with the capability dropped.
//
// runc reads the spec from two places: `<bundle>/config.json` for create/run (`--bundle DIR`,
// default the working directory) and the process file of `runc exec --process FILE`. Both are
// edited in place (atomically) when, and only when, something has to go; everything else in
// them is kept as it was. The real runc: $SLIRP_RUNC_WRAPPER_REAL, else the first of the usual
// paths that is not this program.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// capNames are the kernel's capability numbers (include/uapi/linux/capability.h), as runc names them.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

var runcPaths = []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "runc-wrapper: "+format+"\n", args...)
	os.Exit(1)
}

// missingCaps: the known capabilities outside this process's bounding set (CapBnd of /proc/self/status).
func missingCaps() map[string]bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fail("reading the bounding set: %v", err)
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if value, ok := strings.CutPrefix(scanner.Text(), "CapBnd:"); ok {
			bounding, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
			if err != nil {
				fail("parsing CapBnd %q: %v", value, err)
			}
			missing := map[string]bool{}
			for number, name := range capNames {
				if bounding&(1<<uint(number)) == 0 {
					missing[name] = true
				}
			}
			return missing
		}
	}
	fail("no CapBnd line in /proc/self/status")
	return nil
}

// dropFrom removes the missing capabilities from a capabilities object; true when it changed.
func dropFrom(caps map[string]json.RawMessage, missing map[string]bool) bool {
	changed := false
	for set, raw := range caps {
		var names []string
		if err := json.Unmarshal(raw, &names); err != nil {
			continue // not a list of names: runc will say what is wrong with it
		}
		kept := make([]string, 0, len(names))
		for _, name := range names {
			if !missing[strings.ToUpper(name)] {
				kept = append(kept, name)
			}
		}
		if len(kept) != len(names) {
			encoded, _ := json.Marshal(kept)
			caps[set] = encoded
			changed = true
		}
	}
	return changed
}

// edit rewrites the spec file at path without the missing capabilities. nested: the capabilities
// are under "process" (a bundle's config.json), else at the top (an exec process file).
func edit(path string, nested bool, missing map[string]bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return // runc reports a missing or unreadable spec itself
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return
	}
	holder := top
	if nested {
		var process map[string]json.RawMessage // a map of its own: Unmarshal into top's would merge
		if json.Unmarshal(top["process"], &process) != nil || process == nil {
			return
		}
		holder = process
	}
	var caps map[string]json.RawMessage
	if json.Unmarshal(holder["capabilities"], &caps) != nil || caps == nil || !dropFrom(caps, missing) {
		return
	}
	holder["capabilities"], _ = json.Marshal(caps)
	if nested {
		top["process"], _ = json.Marshal(holder)
	}
	out, err := json.Marshal(top)
	if err != nil {
		fail("encoding %s: %v", path, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		fail("%v", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".runc-wrapper-*")
	if err != nil {
		fail("editing %s: %v", path, err)
	}
	if _, err = tmp.Write(out); err == nil {
		err = tmp.Chmod(info.Mode().Perm())
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		fail("editing %s: %v", path, err)
	}
}

// specFiles finds the bundle and the exec process file in runc's arguments.
func specFiles(args []string) (bundle string, process string, command string) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		value := func() string {
			if _, v, ok := strings.Cut(arg, "="); ok {
				return v
			}
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch {
		case arg == "--bundle" || arg == "-b" || strings.HasPrefix(arg, "--bundle="):
			bundle = value()
		case arg == "--process" || arg == "-p" || strings.HasPrefix(arg, "--process="):
			process = value()
		case command == "" && !strings.HasPrefix(arg, "-"):
			command = arg
		case command == "" && (arg == "--root" || arg == "--log" || arg == "--log-format" || arg == "--criu" ||
			arg == "--rootless"):
			i++ // a global flag's value is not the command
		}
	}
	return bundle, process, command
}

func realRunc() string {
	if path := os.Getenv("SLIRP_RUNC_WRAPPER_REAL"); path != "" {
		return path
	}
	self, _ := os.Stat("/proc/self/exe")
	for _, path := range runcPaths {
		if info, err := os.Stat(path); err == nil && !info.IsDir() && (self == nil || !os.SameFile(info, self)) {
			return path
		}
	}
	fail("no runc found in %v (set SLIRP_RUNC_WRAPPER_REAL)", runcPaths)
	return ""
}

func main() {
	args := os.Args[1:]
	bundle, process, command := specFiles(args)
	if command == "create" || command == "run" || process != "" {
		missing := missingCaps()
		if len(missing) > 0 {
			if command == "create" || command == "run" {
				if bundle == "" {
					bundle = "."
				}
				edit(filepath.Join(bundle, "config.json"), true, missing)
			}
			if process != "" {
				edit(process, false, missing)
			}
		}
	}
	runc := realRunc()
	if err := syscall.Exec(runc, append([]string{runc}, args...), os.Environ()); err != nil {
		fail("exec %s: %v", runc, err)
	}
}
