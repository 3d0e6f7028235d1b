// Command iptables-wrapper is installed as iptables, iptables-save,
// iptables-restore and their ip6tables twins in the kube-proxy and flannel
// images. A container must program the same iptables backend (nf_tables or
// legacy x_tables) as the host, and only the host knows which one it uses.
// On its first run the wrapper finds out, points those six commands at the
// matching xtables-<mode>-multi binary (so later calls skip the wrapper) and
// runs the requested command with it.
//
// This is the job of kubernetes-sigs/iptables-wrappers in the upstream
// images; that module is not served by the Go module proxy, so the mirror kit
// carries this small equivalent. The decision is the same:
//  1. kubelet marks the backend it uses with a KUBE-IPTABLES-HINT chain
//     (older kubelets: KUBE-KUBELET-CANARY) in the mangle table: use that one;
//  2. otherwise use the backend that holds more rules; on a tie, nf_tables.
package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// sbin holds the xtables-*-multi binaries and the commands the wrapper stands for.
const sbin = "/usr/sbin"

var commands = []string{
	"iptables", "iptables-save", "iptables-restore",
	"ip6tables", "ip6tables-save", "ip6tables-restore",
}

// hintChains are the chains kubelet creates in the backend it uses.
var hintChains = []string{":KUBE-IPTABLES-HINT ", ":KUBE-KUBELET-CANARY "}

func main() {
	name := filepath.Base(os.Args[0])
	if !known(name) {
		fmt.Fprintf(os.Stderr, "iptables-wrapper: run me as one of %s, not %s\n", strings.Join(commands, ", "), name)
		os.Exit(2)
	}
	mode := detect()
	if err := relink(mode); err != nil {
		// A read-only root file system: keep detecting on every call.
		fmt.Fprintf(os.Stderr, "iptables-wrapper: %v (continuing)\n", err)
	}
	multi := multiBinary(mode)
	err := syscall.Exec(multi, append([]string{name}, os.Args[1:]...), os.Environ())
	fmt.Fprintf(os.Stderr, "iptables-wrapper: exec %s: %v\n", multi, err)
	os.Exit(1)
}

func known(name string) bool {
	for _, c := range commands {
		if c == name {
			return true
		}
	}
	return false
}

func multiBinary(mode string) string {
	return filepath.Join(sbin, "xtables-"+mode+"-multi")
}

// save returns the output of `<family>-save [args]` run by the given backend,
// or "" if that fails (e.g. no kernel support for that backend).
func save(mode, family string, args ...string) string {
	cmd := exec.Command(multiBinary(mode), args...)
	cmd.Args[0] = family + "-save"
	// Pipes, not /dev/null: the wrapper must work where /dev is empty.
	cmd.Stdin = strings.NewReader("")
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func detect() string {
	for _, mode := range []string{"nft", "legacy"} {
		for _, family := range []string{"iptables", "ip6tables"} {
			out := save(mode, family, "-t", "mangle")
			for _, chain := range hintChains {
				if strings.Contains(out, chain) {
					return mode
				}
			}
		}
	}
	if rules("legacy") > rules("nft") {
		return "legacy"
	}
	return "nft"
}

// rules counts the rules (lines starting with "-A") both families hold in a backend.
func rules(mode string) int {
	n := 0
	for _, family := range []string{"iptables", "ip6tables"} {
		for _, line := range strings.Split(save(mode, family), "\n") {
			if strings.HasPrefix(line, "-A ") {
				n++
			}
		}
	}
	return n
}

// relink replaces each command's link to the wrapper by a link to the
// backend's multi binary; each rename is atomic.
func relink(mode string) error {
	target := filepath.Base(multiBinary(mode))
	for _, c := range commands {
		link := filepath.Join(sbin, c)
		tmp := link + ".iptables-wrapper"
		_ = os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			return fmt.Errorf("link %s: %w", link, err)
		}
		if err := os.Rename(tmp, link); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("link %s: %w", link, err)
		}
	}
	return nil
}
