//! Unit tests of the template language (the e2e tests run it on real containers).

use serde_json::json;

use super::*;

fn run(src: &str, data: &Value) -> String {
    Template::parse(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .execute(data)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn parse_err(src: &str) -> String {
    match Template::parse(src) {
        Ok(_) => panic!("{src} parsed"),
        Err(e) => e.to_string(),
    }
}

fn exec_err(src: &str, data: &Value) -> String {
    match Template::parse(src).unwrap().execute(data) {
        Ok(out) => panic!("{src} gave {out:?}"),
        Err(e) => e.to_string(),
    }
}

fn data() -> Value {
    json!({
        "State": {"Status": "running", "ExitCode": 0, "Running": true, "Pid": 42},
        "Config": {"Env": ["A=1", "B=2"], "Labels": {"tier": "web", "a": "b"}, "Cmd": null},
        "Name": "/web",
        "Num": 3,
        "Float": 2.5,
        "Empty": [],
    })
}

#[test]
fn fields_and_printing() {
    let d = data();
    assert_eq!(run("{{.State.Status}} {{.State.Pid}}", &d), "running 42");
    assert_eq!(run("{{.Config.Env}}", &d), "[A=1 B=2]");
    assert_eq!(run("{{.Config.Labels}}", &d), "map[a:b tier:web]");
    assert_eq!(run("{{.Config.Labels.tier}}", &d), "web");
    assert_eq!(run("{{.Config.Labels.none}}", &d), "<no value>");
    assert_eq!(run("{{.Config.Cmd}}", &d), "<nil>");
    assert_eq!(run("{{.Float}}", &d), "2.5");
    assert_eq!(run("x{{/* a comment */}}y", &d), "xy");
    assert_eq!(run("a  {{- .Num -}}  b", &d), "a3b");
    assert_eq!(run("{{ .Num }}", &d), "3");
}

#[test]
fn functions() {
    let d = data();
    assert_eq!(run("{{json .Config.Env}}", &d), r#"["A=1","B=2"]"#);
    assert_eq!(
        run("{{json .Config.Labels}}", &d),
        r#"{"a":"b","tier":"web"}"#
    );
    assert_eq!(run("{{json .Missing}}", &json!({})), "null");
    assert_eq!(run("{{join .Config.Env \",\"}}", &d), "A=1,B=2");
    assert_eq!(run("{{index .Config.Env 1}}", &d), "B=2");
    assert_eq!(run("{{index .Config.Labels \"tier\"}}", &d), "web");
    assert_eq!(run("[{{index .Config.Labels \"nope\"}}]", &d), "[]");
    assert_eq!(run("{{upper .State.Status}}", &d), "RUNNING");
    assert_eq!(run("{{lower \"AbC\"}}", &d), "abc");
    assert_eq!(run("{{title \"hello big-world\"}}", &d), "Hello Big-World");
    assert_eq!(run("{{split \"a:b:c\" \":\"}}", &d), "[a b c]");
    assert_eq!(run("{{index (split \"a:b:c\" \":\") 2}}", &d), "c");
    assert_eq!(run("{{len .Config.Env}} {{len .Name}}", &d), "2 4");
    assert_eq!(run("{{println .Num \"x\"}}", &d), "3 x\n");
    assert_eq!(run("{{print 1 2 \"a\" \"b\"}}", &d), "1 2ab");
    assert_eq!(
        run(
            "{{printf \"%s=%d|%5s|%-4d|%05.1f|%q|%x\" .Name .Num \"ab\" 7 .Float \"q\" 255}}",
            &d
        ),
        "/web=3|   ab|7   |002.5|\"q\"|ff"
    );
    assert_eq!(run("{{printf \"%d\" .Name}}", &d), "%!d(string=/web)");
    assert_eq!(run("{{printf \"%s %s\" 1}}", &d), "1 %!s(MISSING)");
    assert_eq!(run("{{.Name | printf \"%s!\"}}", &d), "/web!");
    assert_eq!(run("{{pad .Num 2 1}}|{{truncate .Name 2}}", &d), "  3 |/w");
    assert_eq!(run("{{slice .Name 1}}", &d), "web");
}

#[test]
fn the_label_method_of_rows() {
    let row = json!({"Labels": "a=1,com.x=y=z", "Config": {"Labels": {"k": "v"}}});
    assert_eq!(
        run("{{.Label \"com.x\"}}|{{.Label \"none\"}}", &row),
        "y=z|"
    );
    assert_eq!(run("{{.Config.Label \"k\"}}", &row), "v");
    assert_eq!(run("{{\"a\" | .Label}}", &row), "1");
    assert!(exec_err("{{.Label}}", &row).contains("Label takes one argument"));
}

#[test]
fn comparisons_and_logic() {
    let d = data();
    assert_eq!(run("{{eq .State.Status \"running\"}}", &d), "true");
    assert_eq!(run("{{eq .Num 1 2 3}}", &d), "true");
    assert_eq!(run("{{ne .Num 3}}", &d), "false");
    assert_eq!(
        run(
            "{{lt .Num 4}} {{le .Num 3}} {{gt .Float 2}} {{ge .Num 4}}",
            &d
        ),
        "true true true false"
    );
    assert_eq!(run("{{lt \"a\" \"b\"}}", &d), "true");
    assert_eq!(
        run("{{and .Num .Name}} {{and .Empty .Name}}", &d),
        "/web []"
    );
    assert_eq!(run("{{or .Empty .Num}} {{not .Empty}}", &d), "3 true");
    // `and` stops at the first false: the failing call after it is never made.
    assert_eq!(run("{{and false (index .Empty 5)}}", &d), "false");
    assert!(exec_err("{{eq .Num \"3\"}}", &d).contains("incompatible types for comparison"));
}

#[test]
fn control_and_variables() {
    let d = data();
    assert_eq!(run("{{if .State.Running}}up{{else}}down{{end}}", &d), "up");
    assert_eq!(
        run(
            "{{if eq .Num 1}}one{{else if eq .Num 3}}three{{else}}many{{end}}",
            &d
        ),
        "three"
    );
    assert_eq!(run("{{with .State}}{{.Status}}{{end}}", &d), "running");
    assert_eq!(run("{{with .Empty}}x{{else}}none{{end}}", &d), "none");
    assert_eq!(run("{{range .Config.Env}}<{{.}}>{{end}}", &d), "<A=1><B=2>");
    assert_eq!(
        run("{{range $i, $e := .Config.Env}}{{$i}}:{{$e}} {{end}}", &d),
        "0:A=1 1:B=2 "
    );
    assert_eq!(
        run(
            "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
            &d
        ),
        "a=b;tier=web;"
    );
    assert_eq!(run("{{range .Empty}}x{{else}}empty{{end}}", &d), "empty");
    assert_eq!(run("{{range 3}}{{.}}{{end}}", &d), "012");
    assert_eq!(
        run(
            "{{range .Config.Env}}{{if eq . \"B=2\"}}{{break}}{{end}}{{.}}{{end}}",
            &d
        ),
        "A=1"
    );
    assert_eq!(
        run(
            "{{range .Config.Env}}{{if eq . \"A=1\"}}{{continue}}{{end}}{{.}}{{end}}",
            &d
        ),
        "B=2"
    );
    assert_eq!(
        run(
            "{{$n := .Name}}{{with .State}}{{$n}} {{.Status}} {{$.Num}}{{end}}",
            &d
        ),
        "/web running 3"
    );
    assert_eq!(
        run("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", &d),
        "2"
    );
    assert_eq!(run("{{(index .Config.Env 0) | len}}", &d), "3");
}

#[test]
fn errors_are_go_s_and_never_panics() {
    assert!(
        parse_err("{{.State").contains("unclosed action"),
        "{}",
        parse_err("{{.State")
    );
    assert!(parse_err("{{.State").starts_with("template parsing error: template: :1:"));
    assert!(parse_err("{{nosuch .}}").contains("function \"nosuch\" not defined"));
    assert!(parse_err("{{if .A}}x").contains("unexpected EOF"));
    assert!(parse_err("{{end}}").contains("unexpected {{end}}"));
    assert!(parse_err("{{$x}}").contains("undefined variable \"$x\""));
    assert!(parse_err("{{break}}").contains("outside {{range}}"));
    assert!(parse_err("{{\"abc}}").contains("unterminated quoted string"));
    assert!(parse_err("{{template \"x\"}}").contains("not supported"));
    assert!(parse_err("{{(.A}}").contains("unclosed left paren"));
    assert!(parse_err("{{.A |}}").contains("missing command"));
    let d = data();
    let e = exec_err("{{.Stat.Status}}", &d);
    assert!(
        e.contains("executing \"\" at <.Stat.Status>: can't evaluate field Stat"),
        "{e}"
    );
    assert!(exec_err("{{.Name.X}}", &d).contains("can't evaluate field X in type string"));
    assert!(exec_err("{{index .Config.Env 9}}", &d).contains("index out of range: 9"));
    assert!(exec_err("{{.Name 1}}", &d).contains("can't give argument to non-function"));
    assert!(exec_err("{{len .Num}}", &d).contains("len of type int"));
    assert!(exec_err("{{upper .Num}}", &d).contains("upper wants a string"));
    // Odd inputs: errors or text, never a panic.
    for src in [
        "{{",
        "}}",
        "{{-",
        "{{- -}}",
        "{{/*",
        "{{/* x */ .A}}",
        "{{'",
        "{{'ab'}}",
        "{{0x}}",
        "{{.A.}}",
        "{{$}}",
        "{{(}}",
        "{{)}}",
        "{{|}}",
        "{{:=}}",
        "{{$x :=}}",
        "{{range}}{{end}}",
        "{{else}}",
        "{{\"\\q\"}}",
        "{{`x}}",
        "{{ééé}}",
        "{{.é}}",
        "{{→}}",
        "{{.→}}",
        "{{$→}}",
        "{{.A→}}",
        "{{ \u{2028} }}",
        "{{-1}}{{-}}",
    ] {
        if let Ok(t) = Template::parse(src) {
            let _ = t.execute(&d);
        }
    }
}

const TABLE: Table = Table {
    default: "table {{.ID}}\t{{.Names}}",
    headers: &[("ID", "CONTAINER ID"), ("Names", "NAMES")],
};

#[test]
fn render_kinds() {
    let rows = vec![
        json!({"ID": "abc", "Names": "web"}),
        json!({"ID": "defdefdefdefdef", "Names": "db"}),
    ];
    assert_eq!(
        render("", &rows, &TABLE).unwrap(),
        "CONTAINER ID      NAMES\nabc               web\ndefdefdefdefdef   db\n"
    );
    assert_eq!(
        render("table", &rows, &TABLE).unwrap(),
        render("", &rows, &TABLE).unwrap()
    );
    assert_eq!(
        render("table {{.Names}}\\t{{upper .ID}}", &rows, &TABLE).unwrap(),
        "NAMES     CONTAINER ID\nweb       ABC\ndb        DEFDEFDEFDEFDEF\n"
    );
    assert_eq!(
        render("{{.Names}}\\t{{.ID}}", &rows, &TABLE).unwrap(),
        "web\tabc\ndb\tdefdefdefdefdef\n"
    );
    assert_eq!(
        render("json", &rows, &TABLE).unwrap(),
        "{\"ID\":\"abc\",\"Names\":\"web\"}\n{\"ID\":\"defdefdefdefdef\",\"Names\":\"db\"}\n"
    );
    assert_eq!(
        render("table {{.State.Status}}", &[], &TABLE).unwrap(),
        "STATE STATUS\n"
    );
    assert_eq!(
        render_inspect(Some("{{.ID}}"), &rows).unwrap(),
        "abc\ndefdefdefdefdef\n"
    );
    let e: Failure = render("{{.ID", &rows, &TABLE).unwrap_err().into();
    assert_eq!(e.code, 125);
    assert!(check("{{.ID", &TABLE).is_err() && check("json", &TABLE).is_ok());
}
