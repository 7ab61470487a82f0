//! Reading the TOML text into [`Setting`]s: the file's shape (top-level values, command tables,
//! `[source."NAME"]` tables) is checked here; whether a key names an option is checked against
//! clap in `apply`.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{ConfigError, Scalar, ScalarKind, Setting, Table, Value};

/// The settings of the TOML document `text`, in file order.
pub(super) fn parse(path: &Path, text: &str) -> Result<Vec<Setting>, ConfigError> {
    let doc = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().trim_end().to_string(),
    })?;
    let mut r = Reader {
        path,
        text,
        out: Vec::new(),
    };
    for (key, value) in sorted(doc.get_ref()) {
        let k: &str = key.get_ref();
        match value.get_ref() {
            DeValue::Table(t) if k == "source" => {
                for (name, v) in sorted(t) {
                    let DeValue::Table(t) = v.get_ref() else {
                        return Err(r.shape(
                            name.span(),
                            "a source's settings are a table: [source.\"NAME\"]",
                        ));
                    };
                    r.table(Table::Source(name.get_ref().to_string()), t)?;
                }
            }
            DeValue::Table(t) => r.table(Table::Command(k.to_string()), t)?,
            _ => r.setting(Table::Global, key, value)?,
        }
    }
    r.out.sort_by_key(|s| s.line);
    Ok(r.out)
}

type Entry<'a, 'i> = (
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
);

/// A table's entries in file order (the parser's map is sorted by key).
fn sorted<'a, 'i>(t: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut v: Vec<Entry> = t.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    out: Vec<Setting>,
}

impl Reader<'_> {
    fn shape(&self, span: Range<usize>, message: &str) -> ConfigError {
        ConfigError::Syntax {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
            message: message.to_string(),
        }
    }

    /// The settings of a command or source table.
    fn table(&mut self, table: Table, t: &DeTable) -> Result<(), ConfigError> {
        for (key, value) in sorted(t) {
            if let DeValue::Table(_) = value.get_ref() {
                let msg = format!(
                    "{table} holds option settings, not tables: `{}` is a table",
                    key.get_ref()
                );
                return Err(self.shape(key.span(), &msg));
            }
            self.setting(table.clone(), key, value)?;
        }
        Ok(())
    }

    fn setting(
        &mut self,
        table: Table,
        key: &Spanned<std::borrow::Cow<str>>,
        value: &Spanned<DeValue>,
    ) -> Result<(), ConfigError> {
        let line = line_of(self.text, key.span().start);
        let err = |message: String| ConfigError::Setting {
            path: self.path.to_path_buf(),
            line,
            table: table.clone(),
            key: key.get_ref().to_string(),
            message,
        };
        let value = match value.get_ref() {
            DeValue::Array(items) => Value::List(
                items
                    .iter()
                    .map(|i| scalar(i.get_ref()))
                    .collect::<Result<_, _>>()
                    .map_err(err)?,
            ),
            v => Value::Scalar(scalar(v).map_err(err)?),
        };
        self.out.push(Setting {
            table,
            key: key.get_ref().to_string(),
            value,
            line,
        });
        Ok(())
    }
}

/// One value of a setting (not an array or table).
fn scalar(v: &DeValue) -> Result<Scalar, String> {
    let (text, kind) = match v {
        DeValue::String(s) => (s.to_string(), ScalarKind::String),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|e| format!("{e}: {}", i.as_str()))?;
            (n.to_string(), ScalarKind::Integer)
        }
        DeValue::Float(f) => (f.as_str().to_string(), ScalarKind::Float),
        DeValue::Boolean(b) => (b.to_string(), ScalarKind::Boolean),
        DeValue::Datetime(d) => (d.to_string(), ScalarKind::Datetime),
        DeValue::Array(_) => return Err("lists cannot be nested".into()),
        DeValue::Table(_) => return Err("expected a value, found a table".into()),
    };
    Ok(Scalar { text, kind })
}
