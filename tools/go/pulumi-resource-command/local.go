package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/archive"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/asset"
)

// capture collects a stream into a buffer and, when enabled, forwards each
// line to the engine log.
type capture struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	line bytes.Buffer
	emit func(string)
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if c.emit != nil {
		for _, b := range p {
			if b == '\n' {
				c.emit(c.line.String())
				c.line.Reset()
				continue
			}
			c.line.WriteByte(b)
		}
	}
	return len(p), nil
}

func (c *capture) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.emit != nil && c.line.Len() > 0 {
		c.emit(c.line.String())
		c.line.Reset()
	}
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSuffix(c.buf.String(), "\n")
}

func newCaptures(p *provider, urn string, m resource.PropertyMap) (*capture, *capture) {
	logOut, logErr := logMode(m)
	out, errc := &capture{}, &capture{}
	if urn != "" {
		if logOut {
			out.emit = func(s string) { p.log(urn, s) }
		}
		if logErr {
			errc.emit = func(s string) { p.log(urn, s) }
		}
	}
	return out, errc
}

// runLocal runs a command on this machine and returns stdout, stderr and,
// when assetPaths/archivePaths are given, assets and archive.
func runLocal(ctx context.Context, p *provider, urn string, m resource.PropertyMap, command string,
	prev resource.PropertyMap,
) (resource.PropertyMap, error) {
	interp := stringListProp(m, "interpreter")
	if len(interp) == 0 {
		interp = []string{"/bin/sh", "-c"}
	}
	args := append(append([]string{}, interp[1:]...), command)
	cmd := exec.CommandContext(ctx, interp[0], args...) //nolint:gosec // running commands is the point
	dir := stringProp(m, "dir")
	if dir != "" {
		cmd.Dir = dir
	}
	env := os.Environ()
	for k, v := range previousEnv(prev) {
		env = append(env, k+"="+v)
	}
	for k, v := range stringMapProp(m, "environment") {
		env = append(env, k+"="+v)
	}
	cmd.Env = env
	if s := stringProp(m, "stdin"); s != "" {
		cmd.Stdin = strings.NewReader(s)
	}
	stdout, stderr := newCaptures(p, urn, m)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	err := cmd.Run()
	stdout.flush()
	stderr.flush()
	if err != nil {
		return nil, fmt.Errorf("local command %q failed: %w\nstdout: %s\nstderr: %s",
			command, err, stdout.String(), stderr.String())
	}
	res := resource.PropertyMap{
		"stdout": resource.NewStringProperty(stdout.String()),
		"stderr": resource.NewStringProperty(stderr.String()),
	}
	base := dir
	if base == "" {
		base, _ = os.Getwd()
	}
	if globs := stringListProp(m, "assetPaths"); len(globs) > 0 {
		files, err := matchFiles(base, globs)
		if err != nil {
			return nil, err
		}
		assets := resource.PropertyMap{}
		for _, f := range files {
			a, err := asset.FromPath(filepath.Join(base, f))
			if err != nil {
				return nil, err
			}
			assets[resource.PropertyKey(f)] = resource.NewAssetProperty(a)
		}
		res["assets"] = resource.NewObjectProperty(assets)
	}
	if globs := stringListProp(m, "archivePaths"); len(globs) > 0 {
		files, err := matchFiles(base, globs)
		if err != nil {
			return nil, err
		}
		members := map[string]any{}
		for _, f := range files {
			a, err := asset.FromPath(filepath.Join(base, f))
			if err != nil {
				return nil, err
			}
			members[f] = a
		}
		ar, err := archive.FromAssets(members)
		if err != nil {
			return nil, err
		}
		res["archive"] = resource.NewArchiveProperty(ar)
	}
	return res, nil
}

// globToRegexp converts a glob ("*" within a path segment, "**" across
// segments, "?" one character) to an anchored regular expression.
func globToRegexp(g string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch {
		case c == '*' && i+1 < len(g) && g[i+1] == '*':
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// matchFiles returns the files (not directories) under base whose relative
// paths match the globs; globs starting with "!" exclude. Rules apply in order.
func matchFiles(base string, globs []string) ([]string, error) {
	type rule struct {
		re      *regexp.Regexp
		exclude bool
	}
	var rules []rule
	for _, g := range globs {
		ex := strings.HasPrefix(g, "!")
		re, err := globToRegexp(strings.TrimPrefix(strings.TrimPrefix(g, "!"), "./"))
		if err != nil {
			return nil, fmt.Errorf("bad glob %q: %w", g, err)
		}
		rules = append(rules, rule{re, ex})
	}
	var out []string
	err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(base, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		in := false
		for _, r := range rules {
			if r.re.MatchString(rel) {
				in = !r.exclude
			}
		}
		if in {
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}
