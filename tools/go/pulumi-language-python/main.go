// Command pulumi-language-python is a small Python language host for the
// Pulumi engine, written for this project because the upstream host's Go
// module is not served by the module proxy this project can reach.
//
// It implements the LanguageRuntime gRPC service from the Pulumi SDK:
//   - Run starts `python -u pulumi-language-python-exec ...` (the exec script
//     shipped in the Pulumi SDK module, installed beside this binary), passing
//     the engine/monitor addresses on the command line and the stack config in
//     PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS.
//   - GetRequiredPackages/GetRequiredPlugins list the installed Python
//     distributions that ship a pulumi-plugin.json with "resource": true.
//   - InstallDependencies creates the configured virtualenv and pip-installs
//     requirements.txt.
//
// Python is chosen as: the `virtualenv` runtime option of Pulumi.yaml
// (relative to the project root; `toolchain: uv` defaults it to .venv), else
// $PULUMI_PYTHON_CMD, else python3 (or python) from PATH.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// version is set with -ldflags "-X main.version=...".
var version = "0.0.0-dev"

const bailExitCode = 32 // the exec script's "error already shown to the user" code

// listPluginsScript prints a JSON list of the resource plugins that installed
// Python distributions declare in a pulumi-plugin.json file.
const listPluginsScript = `
import json, sys
try:
    import importlib.metadata as md
except ImportError:
    print("[]"); sys.exit(0)
found = []
for dist in md.distributions():
    try:
        files = dist.files or []
    except Exception:
        continue
    for f in files:
        if f.name != "pulumi-plugin.json":
            continue
        try:
            data = json.loads(f.read_text())
        except Exception:
            continue
        if not data.get("resource"):
            continue
        found.append({
            "name": data.get("name") or "",
            "version": data.get("version") or "",
            "server": data.get("server") or "",
            "dist": (dist.metadata["Name"] or ""),
        })
print(json.dumps(found))
`

// listDistsScript prints a JSON list of installed distributions.
const listDistsScript = `
import json
import importlib.metadata as md
print(json.dumps(sorted({(d.metadata["Name"] or "", d.version) for d in md.distributions()})))
`

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	mu            sync.Mutex
	engineAddress string
}

func main() {
	fs := flag.NewFlagSet("pulumi-language-python", flag.ContinueOnError)
	// Flags that older engines pass; accepted and ignored.
	_ = fs.String("tracing", "", "ignored")
	_ = fs.String("root", "", "ignored")
	_ = fs.String("binary", "", "ignored")
	_ = fs.String("virtualenv", "", "ignored")
	_ = fs.String("typechecker", "", "ignored")
	_ = fs.String("toolchain", "", "ignored")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(version)
		return
	}

	h := &host{}
	if fs.NArg() > 0 {
		h.engineAddress = fs.Arg(0)
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fatal: could not start language host RPC server: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "fatal: language host RPC server stopped: %v\n", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------
// python selection

type pythonEnv struct {
	python string   // executable
	env    []string // full environment for child processes
}

func optionString(info *pulumirpc.ProgramInfo, key string) string {
	if info == nil || info.GetOptions() == nil {
		return ""
	}
	v, ok := info.GetOptions().GetFields()[key]
	if !ok {
		return ""
	}
	if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
		return s.StringValue
	}
	return ""
}

// virtualenvDir returns the absolute virtualenv directory configured for the
// program, or "" when none is configured.
func virtualenvDir(info *pulumirpc.ProgramInfo) (string, error) {
	venv := optionString(info, "virtualenv")
	toolchain := optionString(info, "toolchain")
	if venv == "" {
		switch toolchain {
		case "uv":
			venv = ".venv"
		case "poetry":
			out, err := exec.Command("poetry", "env", "info", "--path").Output()
			if err != nil {
				return "", fmt.Errorf("toolchain poetry: `poetry env info --path` failed: %w", err)
			}
			venv = strings.TrimSpace(string(out))
		}
	}
	if venv == "" {
		return "", nil
	}
	if !filepath.IsAbs(venv) {
		root := ""
		if info != nil {
			root = info.GetRootDirectory()
		}
		if root == "" {
			root, _ = os.Getwd()
		}
		venv = filepath.Join(root, venv)
	}
	return filepath.Clean(venv), nil
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		keep := true
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

func resolvePython(info *pulumirpc.ProgramInfo) (*pythonEnv, error) {
	env := os.Environ()
	venv, err := virtualenvDir(info)
	if err != nil {
		return nil, err
	}
	if venv != "" {
		py := filepath.Join(venv, "bin", "python")
		if _, err := os.Stat(py); err != nil {
			return nil, fmt.Errorf("the virtualenv %q configured in Pulumi.yaml has no bin/python; "+
				"create it (python3 -m venv %s) and install the requirements into it", venv, venv)
		}
		env = withoutEnv(env, "PYTHONHOME", "VIRTUAL_ENV", "PATH")
		env = append(env,
			"VIRTUAL_ENV="+venv,
			"PATH="+filepath.Join(venv, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
		return &pythonEnv{python: py, env: env}, nil
	}
	if cmd := os.Getenv("PULUMI_PYTHON_CMD"); cmd != "" {
		p, err := exec.LookPath(cmd)
		if err != nil {
			return nil, fmt.Errorf("PULUMI_PYTHON_CMD=%q: %w", cmd, err)
		}
		return &pythonEnv{python: p, env: env}, nil
	}
	for _, name := range []string{"python3", "python"} {
		if p, err := exec.LookPath(name); err == nil {
			return &pythonEnv{python: p, env: env}, nil
		}
	}
	return nil, errors.New("no python3 or python executable found on PATH")
}

func (p *pythonEnv) output(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command(p.python, args...)
	cmd.Env = p.env
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", p.python, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

func programDir(info *pulumirpc.ProgramInfo) string {
	if info != nil && info.GetProgramDirectory() != "" {
		return info.GetProgramDirectory()
	}
	wd, _ := os.Getwd()
	return wd
}

// ---------------------------------------------------------------------------
// LanguageRuntime

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

type pluginDecl struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Server  string `json:"server"`
	Dist    string `json:"dist"`
}

func (h *host) listPlugins(info *pulumirpc.ProgramInfo) ([]pluginDecl, error) {
	py, err := resolvePython(info)
	if err != nil {
		return nil, err
	}
	out, err := py.output(programDir(info), "-c", listPluginsScript)
	if err != nil {
		return nil, err
	}
	var decls []pluginDecl
	if err := json.Unmarshal(out, &decls); err != nil {
		return nil, fmt.Errorf("parsing plugin list %q: %w", out, err)
	}
	seen := map[string]bool{}
	uniq := decls[:0]
	for _, d := range decls {
		if d.Name == "" {
			continue
		}
		k := d.Name + "@" + d.Version
		if seen[k] {
			continue
		}
		seen[k] = true
		uniq = append(uniq, d)
	}
	return uniq, nil
}

func (h *host) GetRequiredPackages(_ context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	decls, err := h.listPlugins(req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, d := range decls {
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Kind: "resource", Name: d.Name, Version: d.Version, Server: d.Server,
		})
	}
	return resp, nil
}

func (h *host) GetRequiredPlugins(_ context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	decls, err := h.listPlugins(req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, d := range decls {
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Kind: "resource", Name: d.Name, Version: d.Version, Server: d.Server,
		})
	}
	return resp, nil
}

func execScriptPath() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	p := filepath.Join(filepath.Dir(self), "pulumi-language-python-exec")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("pulumi-language-python-exec not found beside the language host: %w", err)
	}
	return p, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	py, err := resolvePython(info)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	script, err := execScriptPath()
	if err != nil {
		return nil, err
	}

	program := req.GetProgram()
	if info != nil && info.GetEntryPoint() != "" {
		program = filepath.Join(info.GetProgramDirectory(), info.GetEntryPoint())
	}
	if program == "" {
		program = "."
	}
	pwd := req.GetPwd()
	if pwd == "" {
		pwd = programDir(info)
	}
	if !filepath.IsAbs(program) {
		program = filepath.Join(pwd, program)
	}

	h.mu.Lock()
	engine := h.engineAddress
	h.mu.Unlock()

	args := []string{"-u", script,
		"--monitor", req.GetMonitorAddress(),
		"--engine", engine,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", pwd,
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
	}
	if req.GetOrganization() != "" {
		args = append(args, "--organization", req.GetOrganization())
	}
	if info != nil && info.GetRootDirectory() != "" {
		args = append(args, "--root_directory", info.GetRootDirectory())
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	config := req.GetConfig()
	if config == nil {
		config = map[string]string{}
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}

	cmd := exec.CommandContext(ctx, py.python, args...) //nolint:gosec // the engine decides what runs
	cmd.Dir = pwd
	cmd.Env = append(withoutEnv(py.env, "PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS"),
		"PULUMI_CONFIG="+string(configJSON),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretJSON),
	)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr

	if err := cmd.Start(); err != nil {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("starting %s: %v", py.python, err)}, nil
	}
	err = cmd.Wait()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == bailExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("running program: %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// streamWriter forwards child output to an InstallDependencies stream.
type streamWriter struct {
	mu     *sync.Mutex
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := append([]byte(nil), p...)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: b}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: b}
	}
	if err := w.stream.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

func runStreaming(stdout, stderr io.Writer, env []string, dir, name string, args ...string) error {
	fmt.Fprintf(stdout, "$ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	return cmd.Run()
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	info := req.GetInfo()
	mu := &sync.Mutex{}
	stdout := streamWriter{mu: mu, stream: stream}
	stderr := streamWriter{mu: mu, stream: stream, stderr: true}
	dir := req.GetDirectory()
	if dir == "" {
		dir = programDir(info)
	}
	venv, err := virtualenvDir(info)
	if err != nil {
		return err
	}
	if venv != "" {
		if _, err := os.Stat(filepath.Join(venv, "bin", "python")); err != nil {
			base := ""
			for _, name := range []string{"python3", "python"} {
				if p, err := exec.LookPath(name); err == nil {
					base = p
					break
				}
			}
			if base == "" {
				return errors.New("no python3 found on PATH to create the virtualenv")
			}
			if err := runStreaming(stdout, stderr, os.Environ(), dir, base, "-m", "venv", venv); err != nil {
				return fmt.Errorf("creating virtualenv %s: %w", venv, err)
			}
		}
	}
	py, err := resolvePython(info)
	if err != nil {
		return err
	}
	reqs := filepath.Join(dir, "requirements.txt")
	if _, err := os.Stat(reqs); err != nil {
		fmt.Fprintf(stdout, "no requirements.txt in %s; nothing to install\n", dir)
		return nil
	}
	if err := runStreaming(stdout, stderr, py.env, dir, py.python,
		"-m", "pip", "install", "-r", reqs); err != nil {
		return fmt.Errorf("installing %s: %w", reqs, err)
	}
	return nil
}

func (h *host) About(_ context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	py, err := resolvePython(req.GetInfo())
	if err != nil {
		return nil, err
	}
	out, err := py.output(programDir(req.GetInfo()), "-c", "import sys; print(sys.version.split()[0])")
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: py.python, Version: strings.TrimSpace(string(out))}, nil
}

func (h *host) GetProgramDependencies(_ context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	py, err := resolvePython(req.GetInfo())
	if err != nil {
		return nil, err
	}
	out, err := py.output(programDir(req.GetInfo()), "-c", listDistsScript)
	if err != nil {
		return nil, err
	}
	var pairs [][2]string
	if err := json.Unmarshal(out, &pairs); err != nil {
		return nil, fmt.Errorf("parsing dependency list: %w", err)
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pairs {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p[0], Version: p[1]})
	}
	return resp, nil
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) Template(context.Context, *pulumirpc.TemplateRequest) (*pulumirpc.TemplateResponse, error) {
	return &pulumirpc.TemplateResponse{}, nil
}

func (h *host) RunPlugin(*pulumirpc.RunPluginRequest,
	grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	return status.Error(codes.Unimplemented,
		"this project's pulumi-language-python does not run Python plugins (policy packs, components)")
}

func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	// Nothing to do: the program sees its resource monitor go away and exits;
	// signalling it here would only add a KeyboardInterrupt traceback.
	return &emptypb.Empty{}, nil
}
