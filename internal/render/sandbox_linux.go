package render

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// workerCPUSeconds backs up the parent's deadline: a build in a worker whose parent
// died cannot spin for longer.
const workerCPUSeconds = 120

// limitCPU lets the process use workerCPUSeconds more of CPU time than it has used so
// far (RLIMIT_CPU counts over the process's life, and a worker serves many builds).
func limitCPU() error {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return fmt.Errorf("limiting CPU time: %w", err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CPU, &lim); err != nil {
		return fmt.Errorf("limiting CPU time: %w", err)
	}
	lim.Cur = uint64(ru.Utime.Sec+ru.Stime.Sec) + 1 + workerCPUSeconds
	if lim.Max != unix.RLIM_INFINITY && lim.Cur > lim.Max {
		lim.Cur = lim.Max
	}
	if err := unix.Setrlimit(unix.RLIMIT_CPU, &lim); err != nil {
		return fmt.Errorf("limiting CPU time: %w", err)
	}
	return nil
}

// sandbox limits the worker's memory, makes it the OOM killer's first choice,
// and refuses it, through seccomp, the system calls that reach the network or run programs.
// The memory limit is on the process's data mappings (RLIMIT_DATA): the caller adds the
// budget to what the process had mapped at its start (about 100 MiB, 2 MiB of it resident).
func sandbox(maxData int64) error {
	data := uint64(maxData)
	if err := unix.Setrlimit(unix.RLIMIT_DATA, &unix.Rlimit{Cur: data, Max: data}); err != nil {
		return fmt.Errorf("limiting memory: %w", err)
	}
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0) // best effort: a kernel may not offer it
	return denySyscalls()
}

// replyPipe moves the worker's stdout, where the parent reads replies, to a new file
// descriptor, and points descriptor 1 at stderr: whatever kustomize prints cannot break
// the replies.
func replyPipe() (*os.File, error) {
	fd, err := unix.Dup(1)
	if err != nil {
		return nil, fmt.Errorf("keeping the reply pipe: %w", err)
	}
	if err := unix.Dup3(2, 1, 0); err != nil {
		return nil, fmt.Errorf("keeping the reply pipe: %w", err)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "render replies"), nil
}

// dataBytes is the size of the process's data mappings (VmData), what RLIMIT_DATA limits.
func dataBytes() (int64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmData:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmData in /proc/self/status")
}

// denySyscalls installs a seccomp filter on every thread: socket, connect, execve and
// execveat fail with EPERM, anything else is allowed.
func denySyscalls() error {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return fmt.Errorf("no seccomp filter for %s: kustomize is not built there", runtime.GOARCH)
	}
	denied := []uint32{unix.SYS_SOCKET, unix.SYS_CONNECT, unix.SYS_EXECVE, unix.SYS_EXECVEAT}
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
		deny  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	)
	prog := []unix.SockFilter{
		{Code: ldAbs, K: 4}, // seccomp_data.arch
		{Code: jeq, Jt: 1, K: arch},
		{Code: ret, K: unix.SECCOMP_RET_KILL_PROCESS},
		{Code: ldAbs, K: 0},                      // seccomp_data.nr
		{Code: jge, Jt: 0, Jf: 1, K: 0x40000000}, // the x32 ABI's numbers
		{Code: ret, K: deny},
	}
	for _, nr := range denied {
		prog = append(prog, unix.SockFilter{Code: jeq, Jf: 1, K: nr}, unix.SockFilter{Code: ret, K: deny})
	}
	prog = append(prog, unix.SockFilter{Code: ret, K: unix.SECCOMP_RET_ALLOW})
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}
