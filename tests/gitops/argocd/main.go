// Argo CD's health check for tests/argocd: runs a health script the way Argo CD runs a
// resource.customizations.health script from argocd-cm (gopher-lua, Lua 5.1; without
// useOpenLibs only the package, base and table libraries: no string, math or io; a 1 s limit),
// with the object read as JSON on stdin and turned into a Lua table the way Argo CD does
// (maps keyed by string, arrays appended, numbers as Lua numbers). Prints status and message.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

func main() {
	if len(os.Args) != 2 {
		fail(fmt.Errorf("usage: argocd-health SCRIPT < object.json"))
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber() // integers stay integers, as in the API server's objects
	var obj map[string]interface{}
	if err := decoder.Decode(&obj); err != nil {
		fail(err)
	}

	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			fail(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(string(script)); err != nil {
		fail(err)
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		fail(fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type()))
	}
	status, message := result.RawGetString("status"), result.RawGetString("message")
	if status.Type() != lua.LTString {
		fail(fmt.Errorf("hs.status is %s, not a string", status.Type()))
	}
	text := ""
	if message != lua.LNil {
		text = message.String()
	}
	fmt.Printf("%s\n%s", status.String(), text)
}

func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return lua.LNumber(i)
		}
		f, err := v.Float64()
		if err != nil {
			fail(err)
		}
		return lua.LNumber(f)
	case []interface{}:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]interface{}:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
