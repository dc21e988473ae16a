// Command gitops-health judges Kubernetes objects the way Flux and Argo CD do,
// with their own code: kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute,
// which Flux's health checks and `kstatus`-based `kubectl wait` use) and an
// Argo CD resource health Lua script run under gopher-lua (the interpreter
// Argo CD embeds), set up as Argo CD sets it up: the object as the global
// `obj`, only the safe standard libraries, and a returned table whose
// `status` must be one of Argo CD's health codes.
//
// It reads JSON objects on stdin (one object, a List, or a stream of either)
// and prints one JSON line per object:
//
//	{"name":"r1","kstatus":{"status":"Failed","message":"..."},"argocd":{"status":"Degraded","message":"..."}}
//
// Usage: gitops-health -lua path/to/health.lua < objects.json
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type result struct {
	Name    string  `json:"name"`
	Kstatus verdict `json:"kstatus"`
	Argocd  verdict `json:"argocd"`
}

// Argo CD's health codes (pkg/apis/application/v1alpha1 HealthStatusCode); a
// script returning anything else is an error in Argo CD, so it is one here.
var argoCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

func main() {
	script := flag.String("lua", "", "Argo CD health Lua script")
	flag.Parse()
	if *script == "" {
		fmt.Fprintln(os.Stderr, "gitops-health: -lua is required")
		os.Exit(2)
	}
	src, err := os.ReadFile(*script)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitops-health:", err)
		os.Exit(2)
	}
	dec := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var raw map[string]interface{}
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "gitops-health: reading stdin:", err)
			os.Exit(2)
		}
		objs := []map[string]interface{}{raw}
		if items, ok := raw["items"].([]interface{}); ok {
			objs = objs[:0]
			for _, it := range items {
				if m, ok := it.(map[string]interface{}); ok {
					objs = append(objs, m)
				}
			}
		}
		for _, o := range objs {
			r, err := judge(o, string(src))
			if err != nil {
				fmt.Fprintln(os.Stderr, "gitops-health:", err)
				os.Exit(1)
			}
			_ = out.Encode(r)
		}
	}
}

func judge(o map[string]interface{}, script string) (result, error) {
	// Through JSON again so numbers are int64 as in objects read from the API server.
	b, _ := json.Marshal(o)
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		return result{}, fmt.Errorf("decoding object: %w", err)
	}
	r := result{Name: u.GetName()}
	ks, err := status.Compute(u)
	if err != nil {
		return r, fmt.Errorf("kstatus.Compute(%s): %w", u.GetName(), err)
	}
	r.Kstatus = verdict{Status: ks.Status.String(), Message: ks.Message}
	hs, err := runLua(u.Object, script)
	if err != nil {
		return r, fmt.Errorf("health script on %s: %w", u.GetName(), err)
	}
	r.Argocd = hs
	return r, nil
}

// runLua runs a health script as Argo CD's util/lua does: a fresh state with
// only base, table, string, math and package opened, `obj` set as a global,
// and the value the script returns read as {status, message}.
func runLua(obj map[string]interface{}, script string) (verdict, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return verdict{}, err
		}
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return verdict{}, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return verdict{}, fmt.Errorf("script returned %s, not a table", l.Get(-1).Type())
	}
	v := verdict{Status: lua.LVAsString(ret.RawGetString("status")), Message: lua.LVAsString(ret.RawGetString("message"))}
	if !argoCodes[v.Status] {
		return v, fmt.Errorf("script returned status %q, which Argo CD does not know", v.Status)
	}
	return v, nil
}

// toLua converts decoded JSON as Argo CD's decodeValue does: objects and
// arrays become tables (arrays 1-based), numbers LNumber, null LNil.
func toLua(l *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case map[string]interface{}:
		t := l.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []interface{}:
		t := l.NewTable()
		for i, e := range x {
			t.RawSetInt(i+1, toLua(l, e))
		}
		return t
	case string:
		return lua.LString(x)
	case bool:
		return lua.LBool(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case json.Number:
		f, _ := x.Float64()
		return lua.LNumber(f)
	case nil:
		return lua.LNil
	default:
		return lua.LString(fmt.Sprint(x))
	}
}
