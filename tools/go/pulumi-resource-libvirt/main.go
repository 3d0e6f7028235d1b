// Command pulumi-resource-libvirt is this project's build of the Pulumi
// libvirt provider: terraform-provider-libvirt bridged to Pulumi with
// pulumi-terraform-bridge, serving the resource tokens that the pulumi-libvirt
// Python SDK (0.5.4) uses ("libvirt:index/<name>:<Name>").
//
// The upstream provider module is not served by the module proxy this project
// can reach, so the provider mapping is written here. The Pulumi schema is
// generated from the mapping at build time (`--emit-schema`, with docs taken
// from the Terraform schema only) and embedded on a second build.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/dmacvicar/terraform-provider-libvirt/libvirt"
	tfdiag "github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag/colors"
)

// version is the provider version the Python SDK asks for; set with
// -ldflags "-X main.version=...".
var version = "0.5.4"

//go:embed schema.json
var schemaJSON []byte

const pkgName = "libvirt"

// Resource and data source names of the pulumi-libvirt SDK, keyed by the
// Terraform type names.
var resources = map[string]string{
	"libvirt_cloudinit_disk": "CloudInitDisk",
	"libvirt_combustion":     "Combustion",
	"libvirt_domain":         "Domain",
	"libvirt_ignition":       "Ignition",
	"libvirt_network":        "Network",
	"libvirt_pool":           "Pool",
	"libvirt_volume":         "Volume",
}

var dataSources = map[string]string{
	"libvirt_network_dns_host_template":        "getNetworkDnsHostTemplate",
	"libvirt_network_dns_srv_template":         "getNetworkDnsSrvTemplate",
	"libvirt_network_dnsmasq_options_template": "getNetworkDnsmasqOptionsTemplate",
	"libvirt_node_device_info":                 "getNodeDeviceInfo",
	"libvirt_node_devices":                     "getNodeDevices",
	"libvirt_node_info":                        "getNodeInfo",
}

// deferConnectErrors wraps the provider so that a failed connection at
// configure time becomes the error of the first operation that needs it.
func deferConnectErrors(p *schema.Provider) {
	var (
		mu      sync.Mutex
		connErr error
	)
	configure := p.ConfigureFunc
	p.ConfigureFunc = func(d *schema.ResourceData) (interface{}, error) {
		meta, err := configure(d)
		if err != nil {
			mu.Lock()
			connErr = err
			mu.Unlock()
			return &libvirt.Client{}, nil
		}
		return meta, nil
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		if connErr == nil {
			return nil
		}
		return fmt.Errorf("libvirt provider could not connect: %w", connErr)
	}
	wrapCtx := func(f func(context.Context, *schema.ResourceData, interface{}) tfdiag.Diagnostics,
	) func(context.Context, *schema.ResourceData, interface{}) tfdiag.Diagnostics {
		if f == nil {
			return nil
		}
		return func(ctx context.Context, d *schema.ResourceData, meta interface{}) tfdiag.Diagnostics {
			if err := failed(); err != nil {
				return tfdiag.FromErr(err)
			}
			return f(ctx, d, meta)
		}
	}
	wrap := func(f func(*schema.ResourceData, interface{}) error) func(*schema.ResourceData, interface{}) error {
		if f == nil {
			return nil
		}
		return func(d *schema.ResourceData, meta interface{}) error {
			if err := failed(); err != nil {
				return err
			}
			return f(d, meta)
		}
	}
	for _, rs := range []map[string]*schema.Resource{p.ResourcesMap, p.DataSourcesMap} {
		for _, r := range rs {
			r.CreateContext = wrapCtx(r.CreateContext)
			r.ReadContext = wrapCtx(r.ReadContext)
			r.UpdateContext = wrapCtx(r.UpdateContext)
			r.DeleteContext = wrapCtx(r.DeleteContext)
			//nolint:staticcheck // the deprecated non-context functions are still used by some resources
			r.Create, r.Read, r.Update, r.Delete = wrap(r.Create), wrap(r.Read), wrap(r.Update), wrap(r.Delete)
		}
	}
}

// deleteVanishedDomainsQuietly makes deleting a domain that is already gone
// (destroyed and undefined behind Pulumi's back, say with virsh) a success, as
// deleting a vanished volume already is upstream. Upstream's domain Delete
// fails on it, and the only way out would be `pulumi state delete`. Gone means
// what upstream's own Read says: it clears the ID when libvirt has no such domain.
func deleteVanishedDomainsQuietly(p *schema.Provider) {
	domain := p.ResourcesMap["libvirt_domain"]
	read, del := domain.ReadContext, domain.DeleteContext
	domain.DeleteContext = func(ctx context.Context, d *schema.ResourceData, meta interface{}) tfdiag.Diagnostics {
		if diags := read(ctx, d, meta); !diags.HasError() && d.Id() == "" {
			return nil
		}
		return del(ctx, d, meta)
	}
}

func providerInfo() tfbridge.ProviderInfo {
	tf := libvirt.Provider()
	deferConnectErrors(tf)
	deleteVanishedDomainsQuietly(tf)
	info := tfbridge.ProviderInfo{
		P:           shimv2.NewProvider(tf),
		Name:        pkgName,
		Version:     version,
		Description: "libvirt resources for Pulumi (terraform-provider-libvirt, bridged)",
		Keywords:    []string{"pulumi", "libvirt"},
		License:     "Apache-2.0",
		GitHubOrg:   "dmacvicar",
		Config: map[string]*tfbridge.SchemaInfo{
			"uri": {Default: &tfbridge.DefaultInfo{EnvVars: []string{"LIBVIRT_DEFAULT_URI"}}},
		},
		Resources:   map[string]*tfbridge.ResourceInfo{},
		DataSources: map[string]*tfbridge.DataSourceInfo{},
	}
	for tfName, name := range resources {
		if _, ok := tf.ResourcesMap[tfName]; ok {
			info.Resources[tfName] = &tfbridge.ResourceInfo{Tok: tfbridge.MakeResource(pkgName, "index", name)}
		}
	}
	for tfName, name := range dataSources {
		if _, ok := tf.DataSourcesMap[tfName]; ok {
			info.DataSources[tfName] = &tfbridge.DataSourceInfo{Tok: tfbridge.MakeDataSource(pkgName, "index", name)}
		}
	}
	info.SetAutonaming(255, "-")
	return info
}

func emitSchema() error {
	sink := diag.DefaultSink(os.Stderr, os.Stderr, diag.FormatOptions{Color: colors.Never})
	res, err := tfgen.GenerateSchemaWithOptions(tfgen.GenerateSchemaOptions{
		ProviderInfo:    providerInfo(),
		DiagnosticsSink: sink,
		XInMemoryDocs:   true,
	})
	if err != nil {
		return err
	}
	out, err := json.MarshalIndent(res.PackageSpec, "", "  ")
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--emit-schema" {
		if err := emitSchema(); err != nil {
			fmt.Fprintf(os.Stderr, "emit schema: %v\n", err)
			os.Exit(1)
		}
		return
	}
	tfbridge.Main(pkgName, version, providerInfo(), schemaJSON)
}
