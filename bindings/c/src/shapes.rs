//! The JSON shapes of the records the `*_json` calls write (`KeyInfo`,
//! `Usage`, `Whitelist`, `PluginInfo`, `Event` and what they hold) and of
//! the settings they read (`CreateOptions`, `KeyUpdate`), read
//! from their JSON Schemas (`schemars`, derived beside their serde
//! definitions in the core), and written out twice by [`crate::codegen`]:
//! as the documentation block of `keyward.h` and as the Python package's
//! record classes. A field added to a record in Rust appears in both when
//! they are regenerated; nothing else describes the shapes.

use std::fmt::Write as _;

use serde_json::Value;

/// One field's JSON type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Str,
    /// An RFC 3339 time.
    Time,
    /// A key id.
    KeyId,
    /// An IP address as text.
    Ip,
    Int,
    Float,
    Bool,
    /// Any JSON value (metadata, an event's data).
    Any,
    List(Box<Ty>),
    /// An object of any keys, each holding the type.
    Map(Box<Ty>),
    /// Another record, or a string enum, by name.
    Ref(String),
    /// The type, or `null`.
    Nullable(Box<Ty>),
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub name: String,
    pub doc: String,
    pub ty: Ty,
    /// Always present (else absent from older libraries' output, or null).
    pub required: bool,
    /// The schema's default for an absent field.
    pub default: Option<Value>,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    Record(Vec<Field>),
    /// A string enum: each value and what it means.
    Enum(Vec<(String, String)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub name: String,
    pub doc: String,
    pub body: Body,
}

/// Every shape, the described records first, then what they hold in the
/// order first met.
pub(crate) fn shapes() -> Vec<Shape> {
    let roots = [
        schemars::schema_for!(keyward::KeyInfo),
        schemars::schema_for!(keyward::Usage),
        schemars::schema_for!(keyward::RecentRequest),
        schemars::schema_for!(keyward::EventQuery),
        schemars::schema_for!(keyward::EventPage),
        schemars::schema_for!(keyward::Whitelist),
        schemars::schema_for!(keyward::PluginInfo),
        schemars::schema_for!(keyward::Event),
        schemars::schema_for!(keyward::Metrics),
        schemars::schema_for!(keyward::CreateOptions),
        schemars::schema_for!(keyward::KeyUpdate),
    ];
    let mut out: Vec<Shape> = Vec::new();
    let mut defs: Vec<(String, Value)> = Vec::new();
    for root in roots {
        let root = root.to_value();
        let name = root["title"].as_str().expect("a titled schema").to_string();
        out.push(shape(&name, &root));
        if let Some(d) = root.get("$defs").and_then(Value::as_object) {
            for (n, s) in d {
                if !defs.iter().any(|(seen, _)| seen == n) {
                    defs.push((n.clone(), s.clone()));
                }
            }
        }
    }
    // Definitions in the order the shapes before them name them.
    let mut i = 0;
    while i < out.len() {
        for r in refs(&out[i]) {
            if out.iter().any(|s| s.name == r) {
                continue;
            }
            let (_, s) = defs
                .iter()
                .find(|(n, _)| *n == r)
                .unwrap_or_else(|| panic!("no definition of {r}"));
            out.push(shape(&r, s));
        }
        i += 1;
    }
    out
}

/// The records `shape` names, in field order.
fn refs(shape: &Shape) -> Vec<String> {
    fn named(t: &Ty, out: &mut Vec<String>) {
        match t {
            Ty::Ref(n) => out.push(n.clone()),
            Ty::List(t) | Ty::Map(t) | Ty::Nullable(t) => named(t, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Body::Record(fields) = &shape.body {
        for f in fields {
            named(&f.ty, &mut out);
        }
    }
    out
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn shape(name: &str, s: &Value) -> Shape {
    let doc = text(s, "description");
    if let Some(variants) = s.get("oneOf").or_else(|| s.get("enum")) {
        let values = variants
            .as_array()
            .expect("an enum's values")
            .iter()
            .map(|v| match v {
                Value::String(c) => (c.clone(), String::new()),
                v => (text(v, "const"), text(v, "description")),
            })
            .collect();
        return Shape {
            name: name.to_string(),
            doc,
            body: Body::Enum(values),
        };
    }
    let required: Vec<&str> = s["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let props = s["properties"].as_object().expect("a record's properties");
    // The required fields in declaration order (the schema keeps it
    // there), then the others (optional, or added later) by name.
    let mut names: Vec<&str> = required.clone();
    names.extend(
        props
            .keys()
            .map(String::as_str)
            .filter(|n| !required.contains(n)),
    );
    let fields = names
        .into_iter()
        .map(|n| {
            let p = &props[n];
            Field {
                name: n.to_string(),
                doc: text(p, "description"),
                ty: ty(p),
                required: required.contains(&n),
                default: p.get("default").cloned(),
            }
        })
        .collect();
    Shape {
        name: name.to_string(),
        doc,
        body: Body::Record(fields),
    }
}

fn ty(p: &Value) -> Ty {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        return Ty::Ref(r.rsplit('/').next().unwrap_or(r).to_string());
    }
    if let Some(any) = p.get("anyOf").and_then(Value::as_array) {
        let not_null: Vec<&Value> = any.iter().filter(|v| v["type"] != "null").collect();
        assert_eq!(not_null.len(), 1, "an anyOf other than T | null: {p}");
        return Ty::Nullable(Box::new(ty(not_null[0])));
    }
    let (kind, nullable) = match &p["type"] {
        Value::String(k) => (k.as_str(), false),
        Value::Array(ks) => {
            let k: Vec<&str> = ks.iter().filter_map(Value::as_str).collect();
            let kind = k.iter().find(|k| **k != "null").copied().unwrap_or("null");
            (kind, k.contains(&"null"))
        }
        _ => return Ty::Any,
    };
    let t = match (kind, p.get("format").and_then(Value::as_str)) {
        ("string", Some("date-time")) => Ty::Time,
        ("string", Some("key-id")) => Ty::KeyId,
        ("string", Some("ip")) => Ty::Ip,
        ("string", _) => Ty::Str,
        ("integer", _) => Ty::Int,
        ("number", _) => Ty::Float,
        ("boolean", _) => Ty::Bool,
        ("array", _) => Ty::List(Box::new(ty(&p["items"]))),
        ("object", _) if p.get("additionalProperties").is_some_and(Value::is_object) => {
            Ty::Map(Box::new(ty(&p["additionalProperties"])))
        }
        (other, _) => panic!("a JSON type the shapes do not describe: {other}"),
    };
    if nullable {
        Ty::Nullable(Box::new(t))
    } else {
        t
    }
}

/// Rustdoc's markup read as plain text: links' brackets and targets dropped.
fn plain(doc: &str) -> String {
    let mut out = doc.replace("[`", "`");
    while let Some(i) = out.find("`](") {
        let end = out[i..].find(')').map_or(out.len(), |j| i + j + 1);
        out.replace_range(i + 1..end, "");
    }
    out.replace("`]", "`")
}

/// A doc's first paragraph: what the header says of a shape.
fn summary(doc: &str) -> &str {
    doc.split("\n\n").next().unwrap_or("").trim_end()
}

// ------------------------------------------------------------------- C

fn c_type(t: &Ty) -> String {
    match t {
        Ty::Str => "string".into(),
        Ty::Time => "string (RFC 3339, UTC)".into(),
        Ty::KeyId => "string (key id)".into(),
        Ty::Ip => "string (IP address)".into(),
        Ty::Int => "integer".into(),
        Ty::Float => "number".into(),
        Ty::Bool => "boolean".into(),
        Ty::Any => "any JSON".into(),
        Ty::List(t) => format!("[{}]", c_type(t)),
        Ty::Map(t) => format!("{{string: {}}}", c_type(t)),
        Ty::Ref(n) => n.clone(),
        Ty::Nullable(t) => format!("{} | null", c_type(t)),
    }
}

/// The header's description of every shape, as a C comment.
pub(crate) fn c_doc() -> String {
    let mut o = String::from(
        "/*\n * JSON shapes: what the `*_json` calls write, and what they read\n \
         * (CreateOptions: `options_json`; KeyUpdate: `patch_json`). Times are\n \
         * RFC 3339 in UTC. In what the library writes, a field marked \"?\" may\n \
         * be absent (written by an older library), and newer libraries may add\n \
         * fields, so read the ones you know; in what it reads, \"?\" fields may\n \
         * be left out, and unknown ones are refused.\n",
    );
    for s in shapes() {
        let _ = write!(o, " *\n * {}", s.name);
        let first = plain(summary(&s.doc));
        let mut lines = first.lines();
        if let Some(l) = lines.next() {
            let _ = write!(o, ": {l}");
        }
        o.push('\n');
        for l in lines {
            let _ = writeln!(o, " *   {l}");
        }
        match &s.body {
            Body::Record(fields) => {
                for f in fields {
                    let mark = if f.required { "" } else { "?" };
                    let _ = writeln!(o, " *   \"{}\"{mark}: {}", f.name, c_type(&f.ty));
                    for l in plain(&f.doc).lines() {
                        let _ = writeln!(o, " *       {l}");
                    }
                }
            }
            Body::Enum(values) => {
                for (v, doc) in values {
                    let _ = writeln!(o, " *   \"{v}\"  {}", plain(doc).replace('\n', " "));
                }
            }
        }
    }
    o.push_str(" */");
    o
}

// -------------------------------------------------------------- Python

/// Records the Python package shows as named tuples (they are also
/// given as arguments).
const PY_TUPLES: &[&str] = &["Limit"];
/// Shapes the Python package holds otherwise (a flat `Quota` named tuple,
/// `Usage.last_used_at`/`last_used_ip`, the keyword arguments of
/// `create_key`, `update` and `events`): no class is generated for them.
const PY_OWN: &[&str] = &[
    "Quota",
    "Refill",
    "LastUse",
    "CreateOptions",
    "KeyUpdate",
    "NewEntry",
    "EventQuery",
];

/// A JSON field the Python records show otherwise: record, field, and
/// the Python fields made of it (name, type, expression of the JSON value
/// `{v}`, default, documentation).
type PyField = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);
const PY_FIELDS: &[(&str, &str, &[PyField])] = &[
    (
        "KeyInfo",
        "scopes",
        &[("scopes", "Tuple[str, ...]", "tuple({v} or ())", "()", "")],
    ),
    (
        "KeyInfo",
        "quota",
        &[("quota", "Optional[Quota]", "_quota({v})", "None", "")],
    ),
    (
        "Usage",
        "last_used",
        &[
            (
                "last_used_at",
                "Optional[datetime]",
                "_time({v}[\"at\"]) if {v} else None",
                "None",
                "When the key last admitted a request.",
            ),
            (
                "last_used_ip",
                "Optional[str]",
                "{v}[\"ip\"] if {v} else None",
                "None",
                "From which client address.",
            ),
        ],
    ),
];

fn is_enum(shapes: &[Shape], name: &str) -> bool {
    shapes
        .iter()
        .any(|s| s.name == name && matches!(s.body, Body::Enum(_)))
}

fn py_type(shapes: &[Shape], t: &Ty) -> String {
    match t {
        Ty::Str | Ty::KeyId | Ty::Ip => "str".into(),
        Ty::Time => "datetime".into(),
        Ty::Int => "int".into(),
        Ty::Float => "float".into(),
        Ty::Bool => "bool".into(),
        Ty::Any => "Any".into(),
        Ty::List(t) => format!("List[{}]", py_type(shapes, t)),
        Ty::Map(t) => format!("Dict[str, {}]", py_type(shapes, t)),
        Ty::Ref(n) if is_enum(shapes, n) => "str".into(),
        Ty::Ref(n) => n.clone(),
        Ty::Nullable(t) => format!("Optional[{}]", py_type(shapes, t)),
    }
}

/// The expression converting JSON value `v` to `t`; `None` when it is `v`.
fn py_convert(shapes: &[Shape], t: &Ty, v: &str) -> Option<String> {
    match t {
        Ty::Time => Some(format!("_time({v})")),
        Ty::Ref(n) if !is_enum(shapes, n) => Some(format!("{n}._from({v})")),
        Ty::Map(t) => Some(match py_convert(shapes, t, "x") {
            Some(each) => format!("{{k: {each} for k, x in {v}.items()}}"),
            None => format!("dict({v})"),
        }),
        Ty::List(t) => Some(match py_convert(shapes, t, "x") {
            Some(each) => format!("[{each} for x in {v}]"),
            None => format!("list({v})"),
        }),
        // `_time` takes None already.
        Ty::Nullable(t) if **t == Ty::Time => Some(format!("_time({v})")),
        Ty::Nullable(t) => {
            py_convert(shapes, t, v).map(|c| format!("None if {v} is None else {c}"))
        }
        _ => None,
    }
}

fn py_default(f: &Field) -> Option<String> {
    if f.required {
        return None;
    }
    Some(match (&f.ty, &f.default) {
        (Ty::List(_), _) => "field(default_factory=list)".into(),
        (_, Some(Value::Bool(b))) => if *b { "True" } else { "False" }.into(),
        (_, Some(Value::Number(n))) => n.to_string(),
        (Ty::Nullable(_) | Ty::Any, _) => "None".into(),
        (t, d) => panic!("no Python default for {t:?} ({d:?})"),
    })
}

fn py_doc(o: &mut String, indent: &str, doc: &str) {
    let doc = plain(doc).replace('\\', "\\\\").replace("\"\"\"", "'''");
    let mut lines = doc.lines();
    let Some(first) = lines.next() else { return };
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        let _ = writeln!(o, "{indent}\"\"\"{first}\"\"\"\n");
    } else {
        let _ = writeln!(o, "{indent}\"\"\"{first}");
        for l in rest {
            let _ = writeln!(o, "{indent}{l}");
        }
        let _ = writeln!(o, "{indent}\"\"\"\n");
    }
}

/// The Python record classes, each with `_from(d)` reading the JSON
/// object `d` (fields a newer library adds are ignored).
pub(crate) fn python() -> String {
    let shapes = shapes();
    let mut o = String::new();
    for s in &shapes {
        let Body::Record(fields) = &s.body else {
            continue;
        };
        if PY_OWN.contains(&s.name.as_str()) {
            continue;
        }
        // (name, type, conversion, default, doc), the defaulted ones last.
        let mut py: Vec<(String, String, String, Option<String>, String)> = Vec::new();
        for f in fields {
            let get = if f.required {
                format!("d[\"{}\"]", f.name)
            } else {
                format!("d.get(\"{}\")", f.name)
            };
            if let Some((_, _, own)) = PY_FIELDS
                .iter()
                .find(|(r, n, _)| *r == s.name && *n == f.name)
            {
                for (name, t, expr, default, doc) in *own {
                    py.push((
                        (*name).into(),
                        (*t).into(),
                        expr.replace("{v}", &get),
                        Some((*default).into()),
                        if doc.is_empty() {
                            f.doc.clone()
                        } else {
                            (*doc).into()
                        },
                    ));
                }
                continue;
            }
            let default = py_default(f);
            // What an absent field reads as.
            let absent = match (&f.ty, &f.default) {
                (Ty::List(_), _) => Some("[]".to_string()),
                (_, Some(Value::Null) | None) => None,
                (_, Some(_)) => default.clone(),
            };
            let value = match absent {
                Some(a) if !f.required => format!("d.get(\"{}\", {a})", f.name),
                _ => get,
            };
            let expr = py_convert(&shapes, &f.ty, &value).unwrap_or(value);
            py.push((
                f.name.clone(),
                py_type(&shapes, &f.ty),
                expr,
                default,
                f.doc.clone(),
            ));
        }
        py.sort_by_key(|p| p.3.is_some());
        let tuple = PY_TUPLES.contains(&s.name.as_str());
        if tuple {
            let _ = writeln!(o, "\nclass {}(NamedTuple):", s.name);
        } else {
            let _ = writeln!(o, "\n@dataclass(frozen=True)\nclass {}:", s.name);
        }
        py_doc(&mut o, "    ", &s.doc);
        for (name, t, _, default, doc) in &py {
            for l in plain(doc).lines() {
                let _ = writeln!(o, "    #: {l}");
            }
            match default {
                Some(d) => {
                    let _ = writeln!(o, "    {name}: {t} = {d}");
                }
                None => {
                    let _ = writeln!(o, "    {name}: {t}");
                }
            }
        }
        let _ = writeln!(
            o,
            "\n    @classmethod\n    def _from(cls, d: Dict[str, Any]) -> \"{}\":\n        return cls(",
            s.name
        );
        for (name, _, expr, _, _) in &py {
            let _ = writeln!(o, "            {name}={expr},");
        }
        o.push_str("        )\n\n");
    }
    o
}

#[test]
fn the_usage_totals_shape_counts_every_counted_denial() {
    let shapes = shapes();
    let totals = shapes
        .iter()
        .find(|s| s.name == "UsageTotals")
        .expect("UsageTotals is described");
    let Body::Record(fields) = &totals.body else {
        panic!("a record")
    };
    let mut names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    let mut want = vec!["allowed", "denied"];
    want.extend(
        keyward::UsageTotals::default()
            .by_reason()
            .into_iter()
            .map(|(d, _)| d.as_str()),
    );
    want.sort_unstable();
    assert_eq!(names, want);
}

#[test]
fn every_described_record_is_read_whole() {
    // A field every shape has, and one a nested record has.
    let c = c_doc();
    for needle in [
        "KeyInfo: ",
        "\"whitelist_enabled\": boolean",
        "\"last_used\"?: LastUse | null",
        "IpUsage",
        "PluginStatus",
        "\"key.created\"",
    ] {
        assert!(c.contains(needle), "{needle} missing from\n{c}");
    }
    let py = python();
    for needle in [
        "class KeyInfo:",
        "class Limit(NamedTuple):",
        "    last_used_at: Optional[datetime] = None",
        "status=PluginStatus._from(d[\"status\"])",
    ] {
        assert!(py.contains(needle), "{needle} missing from\n{py}");
    }
}
