package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/archive"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

type connInfo struct {
	host, user, password, privateKey, keyPassword, agentSocket, hostKey string
	port                                                                int
	dialErrorLimit                                                      int
	perDialTimeout                                                      time.Duration
	proxy                                                               *connInfo
}

func parseConn(m resource.PropertyMap) (*connInfo, error) {
	if m == nil {
		return nil, errors.New("missing connection")
	}
	c := &connInfo{
		host:        stringProp(m, "host"),
		user:        stringProp(m, "user"),
		password:    stringProp(m, "password"),
		privateKey:  stringProp(m, "privateKey"),
		keyPassword: stringProp(m, "privateKeyPassword"),
		agentSocket: stringProp(m, "agentSocketPath"),
		hostKey:     stringProp(m, "hostKey"),
		port:        int(numberProp(m, "port", 22)),
	}
	if c.host == "" {
		return nil, errors.New("connection.host is required")
	}
	if c.user == "" {
		c.user = "root"
	}
	c.dialErrorLimit = int(numberProp(m, "dialErrorLimit", 10))
	c.perDialTimeout = time.Duration(numberProp(m, "perDialTimeout", 15)) * time.Second
	if v, ok := m["proxy"]; ok && v.IsObject() {
		px, err := parseConn(v.ObjectValue())
		if err != nil {
			return nil, fmt.Errorf("connection.proxy: %w", err)
		}
		c.proxy = px
	}
	return c, nil
}

func connFrom(m resource.PropertyMap) (*connInfo, error) {
	v, ok := m["connection"]
	if !ok || !v.IsObject() {
		return nil, errors.New("missing connection")
	}
	return parseConn(v.ObjectValue())
}

func (c *connInfo) addr() string { return net.JoinHostPort(c.host, strconv.Itoa(c.port)) }

func (c *connInfo) clientConfig() (*ssh.ClientConfig, error) {
	var auths []ssh.AuthMethod
	if c.privateKey != "" {
		var signer ssh.Signer
		var err error
		if c.keyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(c.privateKey), []byte(c.keyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(c.privateKey))
		}
		if err != nil {
			return nil, fmt.Errorf("parsing private key: %w", err)
		}
		auths = append(auths, ssh.PublicKeys(signer))
	}
	if c.password != "" {
		auths = append(auths, ssh.Password(c.password),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				ans := make([]string, len(qs))
				for i := range ans {
					ans[i] = c.password
				}
				return ans, nil
			}))
	}
	sock := c.agentSocket
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			auths = append(auths, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		}
	}
	hkc := ssh.InsecureIgnoreHostKey() //nolint:gosec // upstream semantics: no hostKey means no check
	if c.hostKey != "" {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.hostKey))
		if err != nil {
			return nil, fmt.Errorf("parsing hostKey: %w", err)
		}
		hkc = ssh.FixedHostKey(pk)
	}
	return &ssh.ClientConfig{User: c.user, Auth: auths, HostKeyCallback: hkc, Timeout: c.perDialTimeout}, nil
}

// dial connects (through the proxy, if any), retrying up to dialErrorLimit
// times (-1: forever) with a growing pause between attempts.
func (c *connInfo) dial(ctx context.Context) (*ssh.Client, error) {
	cfg, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	var proxy *ssh.Client
	if c.proxy != nil {
		if proxy, err = c.proxy.dial(ctx); err != nil {
			return nil, fmt.Errorf("dialing proxy %s: %w", c.proxy.addr(), err)
		}
	}
	delay := time.Second
	var lastErr error
	for attempt := 1; c.dialErrorLimit < 0 || attempt <= c.dialErrorLimit; attempt++ {
		var client *ssh.Client
		if proxy != nil {
			var nc net.Conn
			nc, lastErr = proxy.Dial("tcp", c.addr())
			if lastErr == nil {
				var sc ssh.Conn
				var chans <-chan ssh.NewChannel
				var reqs <-chan *ssh.Request
				sc, chans, reqs, lastErr = ssh.NewClientConn(nc, c.addr(), cfg)
				if lastErr == nil {
					client = ssh.NewClient(sc, chans, reqs)
				}
			}
		} else {
			client, lastErr = ssh.Dial("tcp", c.addr(), cfg)
		}
		if lastErr == nil {
			return client, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay < 10*time.Second {
			delay *= 2
		}
	}
	if proxy != nil {
		_ = proxy.Close()
	}
	return nil, fmt.Errorf("could not connect to %s@%s after %d attempts: %w", c.user, c.addr(), c.dialErrorLimit, lastErr)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// runRemote runs a command over SSH. Environment variables are sent with SSH
// "setenv" requests; when the server refuses them (no AcceptEnv), they are
// exported by a shell prefix instead.
func runRemote(ctx context.Context, p *provider, urn string, m resource.PropertyMap, command string,
	prev resource.PropertyMap,
) (resource.PropertyMap, error) {
	ci, err := connFrom(m)
	if err != nil {
		return nil, err
	}
	client, err := ci.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return nil, err
	}
	defer session.Close()

	env := map[string]string{}
	for k, v := range previousEnv(prev) {
		env[k] = v
	}
	for k, v := range stringMapProp(m, "environment") {
		env[k] = v
	}
	var prefix strings.Builder
	for k, v := range env {
		if err := session.Setenv(k, v); err != nil {
			fmt.Fprintf(&prefix, "export %s=%s; ", k, shellQuote(v))
		}
	}
	if s := stringProp(m, "stdin"); s != "" {
		session.Stdin = strings.NewReader(s)
	}
	stdout, stderr := newCaptures(p, urn, m)
	session.Stdout = stdout
	session.Stderr = stderr

	done := make(chan error, 1)
	go func() { done <- session.Run(prefix.String() + command) }()
	select {
	case <-ctx.Done():
		_ = session.Signal(ssh.SIGTERM)
		_ = client.Close()
		return nil, ctx.Err()
	case err = <-done:
	}
	stdout.flush()
	stderr.flush()
	if err != nil {
		return nil, fmt.Errorf("remote command on %s failed: %w\nstdout: %s\nstderr: %s",
			ci.addr(), err, stdout.String(), stderr.String())
	}
	return resource.PropertyMap{
		"stdout": resource.NewStringProperty(stdout.String()),
		"stderr": resource.NewStringProperty(stderr.String()),
	}, nil
}

// runWithInput runs one shell command on the client with data as stdin.
func runWithInput(client *ssh.Client, command string, data []byte) error {
	session, err := client.NewSession()
	if err != nil {
		return err
	}
	defer session.Close()
	session.Stdin = bytes.NewReader(data)
	var out bytes.Buffer
	session.Stdout = &out
	session.Stderr = &out
	if err := session.Run(command); err != nil {
		return fmt.Errorf("%s: %w: %s", command, err, out.String())
	}
	return nil
}

// copyToRemote uploads a file asset (CopyToRemote source asset, CopyFile
// localPath) with `cat`, or a directory/archive with `tar -x`. When the
// remote path is an existing directory, the source goes inside it.
func copyToRemote(ctx context.Context, _ *provider, _ string, typ string, m resource.PropertyMap) error {
	ci, err := connFrom(m)
	if err != nil {
		return err
	}
	remote := stringProp(m, "remotePath")
	if remote == "" {
		return errors.New("remotePath is required")
	}
	var (
		fileData []byte
		tarData  []byte
		baseName string
	)
	if typ == tokCopyFile {
		local := stringProp(m, "localPath")
		if fileData, err = os.ReadFile(local); err != nil {
			return err
		}
		baseName = path.Base(local)
	} else {
		src, ok := m["source"]
		switch {
		case ok && src.IsAsset():
			a := src.AssetValue()
			if fileData, err = a.Bytes(); err != nil {
				return err
			}
			if p, ok := a.GetPath(); ok {
				baseName = path.Base(p)
			}
		case ok && src.IsArchive():
			ar := src.ArchiveValue()
			if tarData, err = ar.Bytes(archive.TarArchive); err != nil {
				return err
			}
			if p, ok := ar.GetPath(); ok {
				baseName = path.Base(strings.TrimSuffix(p, "/"))
			}
		default:
			return errors.New("source must be an asset or an archive")
		}
	}
	client, err := ci.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()

	q := shellQuote(remote)
	if fileData != nil {
		name := shellQuote(baseName)
		script := fmt.Sprintf(`set -e; d=%s; if [ -d "$d" ] && [ -n %s ]; then d="$d/"%s; fi; `+
			`mkdir -p "$(dirname "$d")"; cat > "$d"`, q, name, name)
		return runWithInput(client, script, fileData)
	}
	name := shellQuote(baseName)
	script := fmt.Sprintf(`set -e; d=%s; if [ -d "$d" ] && [ -n %s ]; then d="$d/"%s; fi; `+
		`mkdir -p "$d"; tar -x -f - -C "$d"`, q, name, name)
	return runWithInput(client, script, tarData)
}
