//! The Prometheus text exposition format (0.0.4), the one node_exporter's textfile collector and
//! a Prometheus scrape read: `# HELP` and `# TYPE` once per family, then its samples, one per line,
//! `name{label="value",...} value`. Rendering is exact (escapes, `+Inf`/`NaN`, families kept
//! together); parsing is lenient and only for reading back a file strata wrote, so that a run can
//! keep the series of other sources and commands: a line it cannot read is skipped and reported.

use std::fmt::Write;

/// A metric family's type, as the `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that only grows (`_total`), reset only when its producer restarts.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative `_bucket{le=...}` counts with `_sum` and `_count`.
    Histogram,
    /// A summary (read back from a file only, never written by strata).
    Summary,
    /// No `# TYPE` line.
    Untyped,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            _ => return None,
        })
    }

    /// Suffixes of the sample names that belong to a family of this type.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Histogram => &["_bucket", "_sum", "_count"],
            Kind::Summary => &["_sum", "_count"],
            _ => &[],
        }
    }
}

/// Label pairs in the order written.
pub type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name (a histogram's samples end in `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// A sample named `name` with `labels` (`&str` pairs, for brevity at call sites).
    pub fn new(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    /// Whether this sample is the series `name{labels}` (labels compared as a set).
    pub fn is(&self, name: &str, labels: &Labels) -> bool {
        self.name == name && same_labels(&self.labels, labels)
    }

    /// Whether every pair of `required` is among this sample's labels.
    pub fn has_labels(&self, required: &Labels) -> bool {
        required.iter().all(|r| self.labels.contains(r))
    }
}

/// Whether two label lists hold the same pairs, in any order.
pub fn same_labels(a: &Labels, b: &Labels) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

/// A family: its name, help text, type and samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The family name (a counter's includes `_total`, as its samples do).
    pub name: String,
    /// The `# HELP` text.
    pub help: String,
    /// The `# TYPE`.
    pub kind: Kind,
    /// Samples in the order rendered.
    pub samples: Vec<Sample>,
}

/// A value as the format spells it: integers without a fraction, `+Inf`, `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Rust prints the shortest form that reads back exactly, never an exponent.
        format!("{v}")
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes help text: backslash and newline.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some(c) => out.push(c),
            None => out.push('\\'),
        }
    }
    out
}

/// Appends one sample line.
pub fn render_sample(s: &Sample, out: &mut String) {
    out.push_str(&s.name);
    if !s.labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in s.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(s.value));
    out.push('\n');
}

/// Appends a family: `# HELP`, `# TYPE`, then its samples (none: the family is left out).
pub fn render_family(f: &Family, out: &mut String) {
    if f.samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
    let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
    for s in &f.samples {
        render_sample(s, out);
    }
}

/// The whole text of `families`, in the order given.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        render_family(f, &mut out);
    }
    out
}

/// What [`parse`] read: the families in the order met, and the lines it could not read.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Families with their samples.
    pub families: Vec<Family>,
    /// Lines that were not understood (skipped).
    pub skipped: Vec<String>,
}

impl Parsed {
    fn family_mut(&mut self, name: &str) -> &mut Family {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: String::new(),
                    kind: Kind::Untyped,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// The family a sample named `name` belongs to: a typed family of that name, or one whose
    /// type has that suffix (a histogram's `_bucket`), else a family of its own.
    fn family_of(&self, name: &str) -> String {
        if self.families.iter().any(|f| f.name == name) {
            return name.to_string();
        }
        for f in &self.families {
            if f.kind.suffixes().iter().any(|suf| {
                name.strip_suffix(suf)
                    .is_some_and(|base| base == f.name.as_str())
            }) {
                return f.name.clone();
            }
        }
        name.to_string()
    }
}

/// Reads a text-format document (see the module documentation: lenient, for files strata wrote).
pub fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), help) => {
                    p.family_mut(name).help = unescape(help.unwrap_or(""));
                }
                (Some("TYPE"), Some(name), Some(kind)) => match Kind::parse(kind.trim()) {
                    Some(k) => p.family_mut(name).kind = k,
                    None => p.skipped.push(line.to_string()),
                },
                // Any other comment.
                _ => {}
            }
            continue;
        }
        match parse_sample(line) {
            Some(s) => {
                let fam = p.family_of(&s.name);
                p.family_mut(&fam).samples.push(s);
            }
            None => p.skipped.push(line.to_string()),
        }
    }
    p
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// `name{labels} value [timestamp]`; the timestamp, if any, is dropped.
fn parse_sample(line: &str) -> Option<Sample> {
    let end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &line[..end];
    let mut rest = &line[end..];
    let mut labels = Labels::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = parse_labels(r, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads `k="v",...}`; returns what follows the closing brace.
fn parse_labels<'a>(mut r: &'a str, labels: &mut Labels) -> Option<&'a str> {
    loop {
        r = r.trim_start();
        if let Some(after) = r.strip_prefix('}') {
            return Some(after);
        }
        let eq = r.find('=')?;
        let key = r[..eq].trim();
        if key.is_empty()
            || !key
                .chars()
                .enumerate()
                .all(|(i, c)| is_name_char(c, i == 0))
        {
            return None;
        }
        r = r[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = r.char_indices();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        r = r[close + 1..].trim_start();
        if let Some(after) = r.strip_prefix(',') {
            r = after;
        } else if !r.starts_with('}') {
            return None;
        }
    }
}

/// Bucket bounds and counts of one histogram series, rendered as `_bucket`, `_sum`, `_count`.
pub struct HistogramSeries<'a> {
    /// The labels of the series (`le` is added per bucket).
    pub labels: Labels,
    /// Upper bounds, in the unit of `sum`, ascending; `+Inf` is added.
    pub bounds: &'a [f64],
    /// Observations per bucket, not cumulative: `counts[i]` fell in `(bounds[i-1], bounds[i]]`;
    /// one more entry than `bounds` (above the last bound).
    pub counts: Vec<u64>,
    /// Sum of the observations.
    pub sum: f64,
}

impl HistogramSeries<'_> {
    /// The samples of this series in family `name`: cumulative buckets, `_sum`, `_count`
    /// (equal to the `+Inf` bucket, as the format requires).
    pub fn samples(&self, name: &str) -> Vec<Sample> {
        let mut out = Vec::with_capacity(self.bounds.len() + 3);
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c;
            let le = match self.bounds.get(i) {
                Some(b) => format_value(*b),
                None => "+Inf".to_string(),
            };
            let mut labels = self.labels.clone();
            labels.push(("le".into(), le));
            out.push(Sample {
                name: format!("{name}_bucket"),
                labels,
                value: cumulative as f64,
            });
        }
        out.push(Sample {
            name: format!("{name}_sum"),
            labels: self.labels.clone(),
            value: self.sum,
        });
        out.push(Sample {
            name: format!("{name}_count"),
            labels: self.labels.clone(),
            value: cumulative as f64,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_spelled_as_the_format_wants() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1_795_644_553.5), "1795644553.5");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1e21), "1000000000000000000000");
    }

    #[test]
    fn render_then_parse_round_trips() {
        let fams = vec![
            Family {
                name: "strata_x_total".into(),
                help: "Things\\counted\nhere".into(),
                kind: Kind::Counter,
                samples: vec![
                    Sample::new("strata_x_total", &[("source", "/srv/\"shop\"\\\n")], 3.0),
                    Sample::new("strata_x_total", &[], 4.5),
                ],
            },
            Family {
                name: "strata_h_seconds".into(),
                help: "Latency".into(),
                kind: Kind::Histogram,
                samples: HistogramSeries {
                    labels: vec![("op".into(), "read".into())],
                    bounds: &[0.001, 0.01],
                    counts: vec![1, 0, 2],
                    sum: 0.5,
                }
                .samples("strata_h_seconds"),
            },
            Family {
                name: "strata_empty".into(),
                help: "Left out".into(),
                kind: Kind::Gauge,
                samples: vec![],
            },
        ];
        let text = render(&fams);
        assert!(text.contains("strata_x_total{source=\"/srv/\\\"shop\\\"\\\\\\n\"} 3\n"));
        assert!(text.contains("# HELP strata_x_total Things\\\\counted\\nhere\n"));
        assert!(text.contains("strata_h_seconds_bucket{op=\"read\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("strata_h_seconds_count{op=\"read\"} 3\n"));
        assert!(!text.contains("strata_empty"));
        let back = parse(&text);
        assert!(back.skipped.is_empty(), "{:?}", back.skipped);
        assert_eq!(back.families, fams[..2]);
    }

    #[test]
    fn parsing_is_lenient() {
        let p = parse(
            "# a comment\n\nfoo 1 1700000000000\nbar{a=\"1\",} 2\nbad line\nbaz{a=\"1\" 3\n\
             # TYPE foo wrong\nqux{a=\"x\"} NaN\n",
        );
        let names: Vec<_> = p.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["foo", "bar", "qux"]);
        assert_eq!(p.families[0].samples[0].value, 1.0);
        assert_eq!(p.families[1].samples[0].labels, [("a".into(), "1".into())]);
        assert!(p.families[2].samples[0].value.is_nan());
        assert_eq!(p.skipped.len(), 3, "{:?}", p.skipped);
    }

    #[test]
    fn label_sets_compare_in_any_order() {
        let s = Sample::new("x", &[("a", "1"), ("b", "2")], 0.0);
        assert!(s.is(
            "x",
            &vec![("b".into(), "2".into()), ("a".into(), "1".into())]
        ));
        assert!(!s.is("x", &vec![("a".into(), "1".into())]));
        assert!(s.has_labels(&vec![("b".into(), "2".into())]));
        assert!(!s.has_labels(&vec![("b".into(), "3".into())]));
    }
}
