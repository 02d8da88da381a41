package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTimes is the CPU time (user + system) used so far by this process and
// by the child serving the store and the upstream. Linux only: elsewhere
// the child's figure is unknown (-1).
type cpuTimes struct{ self, child time.Duration }

func readCPU(childPid int) cpuTimes {
	var ru syscall.Rusage
	t := cpuTimes{child: -1}
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		t.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if d, err := procCPU(childPid); err == nil {
		t.child = d
	}
	return t
}

// procCPU reads utime + stime from /proc/PID/stat, in clock ticks of 10 ms
// (USER_HZ is 100 on every Linux build Go supports).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count fields after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var ticks int64
	for _, v := range f[11:13] { // fields 14 and 15: utime, stime
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// perKey formats the CPU used between a and b per key, in µs.
func perKey(a, b time.Duration, n int) string {
	if a < 0 || b < 0 || n == 0 {
		return "?"
	}
	return strconv.FormatInt(int64((b-a)/time.Duration(n)/time.Microsecond), 10)
}
