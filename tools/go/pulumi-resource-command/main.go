// Command pulumi-resource-command is this project's own implementation of the
// resources and functions of the Pulumi "command" package, so that the
// pulumi-command Python SDK (1.2.1) works with a locally built toolchain. The
// upstream provider module (github.com/pulumi/pulumi-command/provider) is not
// served by the module proxy this project can reach.
//
// Implemented: command:local:Command, command:local:run, command:remote:Command,
// command:remote:CopyToRemote and command:remote:CopyFile, with the input and
// output properties of the SDK. tools/TOOLCHAIN.md lists the known
// differences from upstream.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// version must equal the version in the SDK's pulumi-plugin.json; set with
// -ldflags "-X main.version=...".
var version = "1.2.1"

const (
	tokLocalCommand = "command:local:Command"
	tokLocalRun     = "command:local:run"
	tokRemoteCmd    = "command:remote:Command"
	tokCopyToRemote = "command:remote:CopyToRemote"
	tokCopyFile     = "command:remote:CopyFile"
)

// inputKeys are the input properties of each resource type (everything else
// in the state is an output).
var inputKeys = map[string][]string{
	tokLocalCommand: {"addPreviousOutputInEnv", "archivePaths", "assetPaths", "create", "delete", "dir",
		"environment", "interpreter", "logging", "stdin", "triggers", "update"},
	tokRemoteCmd: {"addPreviousOutputInEnv", "connection", "create", "delete", "environment", "logging",
		"stdin", "triggers", "update"},
	tokCopyToRemote: {"connection", "remotePath", "source", "triggers"},
	tokCopyFile:     {"connection", "localPath", "remotePath", "triggers"},
}

type provider struct {
	pulumirpc.UnimplementedResourceProviderServer

	engineAddr string
	engineOnce sync.Once
	engine     pulumirpc.EngineClient

	cancelCtx context.Context
	cancel    context.CancelFunc
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println(version)
		return
	}
	p := &provider{}
	p.cancelCtx, p.cancel = context.WithCancel(context.Background())
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-") {
			p.engineAddr = a
			break
		}
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterResourceProviderServer(srv, p)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fatal: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "fatal: %v\n", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------
// marshalling helpers

var unmarshalOpts = plugin.MarshalOptions{KeepUnknowns: true, SkipNulls: true, KeepSecrets: false}
var marshalOpts = plugin.MarshalOptions{KeepUnknowns: true, SkipNulls: true}

func unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	return plugin.UnmarshalProperties(s, unmarshalOpts)
}

func marshal(m resource.PropertyMap) (*structpb.Struct, error) {
	return plugin.MarshalProperties(m, marshalOpts)
}

func typeOf(urn string) string {
	// urn:pulumi:stack::project::[parent$]type::name
	parts := strings.Split(urn, "::")
	if len(parts) < 4 {
		return ""
	}
	t := parts[2]
	if i := strings.LastIndex(t, "$"); i >= 0 {
		t = t[i+1:]
	}
	return t
}

func nameOf(urn string) string {
	parts := strings.Split(urn, "::")
	return parts[len(parts)-1]
}

func newID(urn string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return nameOf(urn) + "-" + hex.EncodeToString(b)
}

func onlyInputs(typ string, m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for _, k := range inputKeys[typ] {
		if v, ok := m[resource.PropertyKey(k)]; ok {
			out[resource.PropertyKey(k)] = v
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// engine logging

func (p *provider) log(urn, msg string) {
	if p.engineAddr == "" || msg == "" {
		return
	}
	p.engineOnce.Do(func() {
		conn, err := grpc.NewClient(p.engineAddr,
			grpc.WithTransportCredentials(insecure.NewCredentials()), rpcutil.GrpcChannelOptions())
		if err == nil {
			p.engine = pulumirpc.NewEngineClient(conn)
		}
	})
	if p.engine == nil {
		return
	}
	_, _ = p.engine.Log(context.Background(), &pulumirpc.LogRequest{
		Severity: pulumirpc.LogSeverity_INFO, Message: msg, Urn: urn, Ephemeral: true,
	})
}

// ---------------------------------------------------------------------------
// ResourceProvider

func (p *provider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (p *provider) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: fmt.Sprintf(`{"name":"command","version":%q}`, version)}, nil
}

func (p *provider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *provider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *provider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	// Secrets are unwrapped by the engine before they reach us; the engine
	// marks outputs secret when the same-named input was secret.
	return &pulumirpc.ConfigureResponse{AcceptSecrets: false, SupportsPreview: false}, nil
}

func (p *provider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	p.cancel()
	return &emptypb.Empty{}, nil
}

func (p *provider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	typ := typeOf(req.GetUrn())
	if _, ok := inputKeys[typ]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "unknown resource type %q", typ)
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	need := func(k string) {
		if v, ok := news[resource.PropertyKey(k)]; !ok || v.IsNull() {
			failures = append(failures, &pulumirpc.CheckFailure{Property: k, Reason: "missing required property '" + k + "'"})
		}
	}
	switch typ {
	case tokRemoteCmd:
		need("connection")
	case tokCopyToRemote:
		need("connection")
		need("source")
		need("remotePath")
	case tokCopyFile:
		need("connection")
		need("localPath")
		need("remotePath")
	}
	if v, ok := news["connection"]; ok && v.IsObject() {
		if h, ok := v.ObjectValue()["host"]; !ok || h.IsNull() {
			failures = append(failures, &pulumirpc.CheckFailure{Property: "connection.host", Reason: "missing required property 'host'"})
		}
	}
	return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
}

func (p *provider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	typ := typeOf(req.GetUrn())
	olds, err := unmarshal(req.GetOldInputs())
	if err != nil {
		return nil, err
	}
	if len(olds) == 0 {
		if olds, err = unmarshal(req.GetOlds()); err != nil {
			return nil, err
		}
		olds = onlyInputs(typ, olds)
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	ignore := map[string]bool{}
	for _, k := range req.GetIgnoreChanges() {
		ignore[k] = true
	}
	resp := &pulumirpc.DiffResponse{DetailedDiff: map[string]*pulumirpc.PropertyDiff{}, HasDetailedDiff: true}
	for _, k := range inputKeys[typ] {
		if ignore[k] {
			continue
		}
		o, hasO := olds[resource.PropertyKey(k)]
		n, hasN := news[resource.PropertyKey(k)]
		if hasO && o.IsNull() {
			hasO = false
		}
		if hasN && n.IsNull() {
			hasN = false
		}
		var kind pulumirpc.PropertyDiff_Kind
		switch {
		case !hasO && !hasN:
			continue
		case !hasO:
			kind = pulumirpc.PropertyDiff_ADD
		case !hasN:
			kind = pulumirpc.PropertyDiff_DELETE
		case n.ContainsUnknowns() || !o.DeepEquals(n):
			kind = pulumirpc.PropertyDiff_UPDATE
		default:
			continue
		}
		if k == "triggers" {
			kind = map[pulumirpc.PropertyDiff_Kind]pulumirpc.PropertyDiff_Kind{
				pulumirpc.PropertyDiff_ADD:    pulumirpc.PropertyDiff_ADD_REPLACE,
				pulumirpc.PropertyDiff_DELETE: pulumirpc.PropertyDiff_DELETE_REPLACE,
				pulumirpc.PropertyDiff_UPDATE: pulumirpc.PropertyDiff_UPDATE_REPLACE,
			}[kind]
			resp.Replaces = append(resp.Replaces, k)
		}
		resp.Diffs = append(resp.Diffs, k)
		resp.DetailedDiff[k] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	if len(resp.Diffs) > 0 {
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
	} else {
		resp.Changes = pulumirpc.DiffResponse_DIFF_NONE
	}
	return resp, nil
}

func (p *provider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	typ := typeOf(req.GetUrn())
	news, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	id := newID(req.GetUrn())
	if req.GetPreview() {
		out, err := marshal(news)
		return &pulumirpc.CreateResponse{Id: id, Properties: out}, err
	}
	outs, err := p.apply(ctx, req.GetUrn(), typ, opCreate, news, nil)
	if err != nil {
		return nil, err
	}
	st, err := marshal(outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: st}, nil
}

func (p *provider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	typ := typeOf(req.GetUrn())
	olds, err := unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	outs, err := p.apply(ctx, req.GetUrn(), typ, opUpdate, news, olds)
	if err != nil {
		return nil, err
	}
	st, err := marshal(outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: st}, nil
}

func (p *provider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	typ := typeOf(req.GetUrn())
	olds, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	if _, err := p.apply(ctx, req.GetUrn(), typ, opDelete, olds, olds); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (p *provider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	// Commands have no remote state to read back: keep what we have.
	inputs := req.GetInputs()
	if inputs == nil {
		props, err := unmarshal(req.GetProperties())
		if err != nil {
			return nil, err
		}
		if inputs, err = marshal(onlyInputs(typeOf(req.GetUrn()), props)); err != nil {
			return nil, err
		}
	}
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: inputs}, nil
}

func (p *provider) Invoke(ctx context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	if req.GetTok() != tokLocalRun {
		return nil, status.Errorf(codes.Unimplemented, "unknown function %q", req.GetTok())
	}
	args, err := unmarshal(req.GetArgs())
	if err != nil {
		return nil, err
	}
	if v, ok := args["command"]; !ok || !v.IsString() {
		return &pulumirpc.InvokeResponse{Failures: []*pulumirpc.CheckFailure{
			{Property: "command", Reason: "missing required property 'command'"},
		}}, nil
	}
	res, err := runLocal(ctx, p, "", args, args["command"].StringValue(), nil)
	if err != nil {
		return nil, err
	}
	out := args.Copy()
	for k, v := range res {
		out[k] = v
	}
	ret, err := marshal(out)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.InvokeResponse{Return: ret}, nil
}

// ---------------------------------------------------------------------------
// operations

type op int

const (
	opCreate op = iota
	opUpdate
	opDelete
)

// apply runs the operation for a resource and returns its new state (inputs
// plus outputs). For opDelete the returned map is unused.
func (p *provider) apply(ctx context.Context, urn, typ string, o op, news, olds resource.PropertyMap,
) (resource.PropertyMap, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.cancelCtx.Done():
			cancel()
		case <-ctx.Done():
		}
	}()

	switch typ {
	case tokLocalCommand, tokRemoteCmd:
		cmdText := commandFor(o, news)
		var prev resource.PropertyMap
		if o != opCreate && boolProp(news, "addPreviousOutputInEnv", true) {
			prev = olds
		}
		state := onlyInputs(typ, news)
		if cmdText == "" {
			// Nothing to run (e.g. no delete command): keep previous outputs.
			if o == opUpdate {
				for _, k := range []resource.PropertyKey{"stdout", "stderr", "assets", "archive"} {
					if v, ok := olds[k]; ok {
						state[k] = v
					}
				}
			}
			if o == opCreate {
				state["stdout"] = resource.NewStringProperty("")
				state["stderr"] = resource.NewStringProperty("")
			}
			return state, nil
		}
		var res resource.PropertyMap
		var err error
		if typ == tokLocalCommand {
			res, err = runLocal(ctx, p, urn, news, cmdText, prev)
		} else {
			res, err = runRemote(ctx, p, urn, news, cmdText, prev)
		}
		if err != nil {
			return nil, err
		}
		for k, v := range res {
			state[k] = v
		}
		return state, nil
	case tokCopyToRemote, tokCopyFile:
		if o == opDelete {
			return nil, nil // like upstream, copied files are left in place
		}
		if err := copyToRemote(ctx, p, urn, typ, news); err != nil {
			return nil, err
		}
		return onlyInputs(typ, news), nil
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown resource type %q", typ)
	}
}

func commandFor(o op, m resource.PropertyMap) string {
	switch o {
	case opCreate:
		return stringProp(m, "create")
	case opUpdate:
		if s := stringProp(m, "update"); s != "" {
			return s
		}
		return stringProp(m, "create")
	default:
		return stringProp(m, "delete")
	}
}

func stringProp(m resource.PropertyMap, k string) string {
	if v, ok := m[resource.PropertyKey(k)]; ok && v.IsString() {
		return v.StringValue()
	}
	return ""
}

func boolProp(m resource.PropertyMap, k string, def bool) bool {
	if v, ok := m[resource.PropertyKey(k)]; ok && v.IsBool() {
		return v.BoolValue()
	}
	return def
}

func numberProp(m resource.PropertyMap, k string, def float64) float64 {
	if v, ok := m[resource.PropertyKey(k)]; ok && v.IsNumber() {
		return v.NumberValue()
	}
	return def
}

func stringListProp(m resource.PropertyMap, k string) []string {
	v, ok := m[resource.PropertyKey(k)]
	if !ok || !v.IsArray() {
		return nil
	}
	var out []string
	for _, e := range v.ArrayValue() {
		if e.IsString() {
			out = append(out, e.StringValue())
		}
	}
	return out
}

func stringMapProp(m resource.PropertyMap, k string) map[string]string {
	v, ok := m[resource.PropertyKey(k)]
	if !ok || !v.IsObject() {
		return nil
	}
	out := map[string]string{}
	for kk, vv := range v.ObjectValue() {
		if vv.IsString() {
			out[string(kk)] = vv.StringValue()
		}
	}
	return out
}

// previousEnv returns PULUMI_COMMAND_STDOUT/STDERR from the previous state.
func previousEnv(prev resource.PropertyMap) map[string]string {
	if prev == nil {
		return nil
	}
	return map[string]string{
		"PULUMI_COMMAND_STDOUT": stringProp(prev, "stdout"),
		"PULUMI_COMMAND_STDERR": stringProp(prev, "stderr"),
	}
}

// logMode returns which streams are logged: "stdout", "stderr",
// "stdoutAndStderr" (default) or "none".
func logMode(m resource.PropertyMap) (bool, bool) {
	switch stringProp(m, "logging") {
	case "stdout":
		return true, false
	case "stderr":
		return false, true
	case "none":
		return false, false
	default:
		return true, true
	}
}
