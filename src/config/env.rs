//! `${VAR}` and `${VAR:-default}` in the config text.

/// Where in the TOML text an expansion lands, which decides how its value is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lexical {
    Bare,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
    Comment,
}

/// Expands `${VAR}` and `${VAR:-default}` in the text, except in comments.
/// `$${` stays a literal `${`. Inside a `"…"` string the value is escaped, so
/// a secret holding `"` or `\` stays the secret; inside a `'…'` string a
/// value that cannot be written there is an error.
pub fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<(usize, String)>> {
    expand(text, lookup).map(|(out, _)| out)
}

/// The expanded text and every value put in; or each problem with its line.
type Expanded = Result<(String, Vec<String>), Vec<(usize, String)>>;

/// [`expand_env`], also returning every value it put in (to be masked
/// wherever config text is printed).
pub(crate) fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Expanded {
    let mut values = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut state = Lexical::Bare;
    let mut line = 1usize;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let starts = |p: &str| rest.starts_with(p);
        let mut take = c.len_utf8();
        match (state, c) {
            (_, '\n') => {
                line += 1;
                if matches!(state, Lexical::Comment | Lexical::Basic | Lexical::Literal) {
                    state = Lexical::Bare;
                }
            }
            (Lexical::Comment, _) => {}
            (Lexical::Basic | Lexical::MultiBasic, '\\') => {
                take += rest[take..].chars().next().map_or(0, char::len_utf8);
            }
            (_, '$') if starts("$${") => {
                out.push_str("${");
                rest = &rest[3..];
                continue;
            }
            (_, '$') if starts("${") => {
                let Some(end) = rest.find('}') else {
                    errors.push((line, "`${` without a closing `}`".to_string()));
                    out.push_str(rest);
                    break;
                };
                let inner = &rest[2..end];
                rest = &rest[end + 1..];
                match expansion(inner, &lookup) {
                    Ok(value) => {
                        write_value(state, inner, &value, &mut out)
                            .unwrap_or_else(|e| errors.push((line, e)));
                        values.push(value);
                    }
                    Err(e) => errors.push((line, e)),
                }
                continue;
            }
            (Lexical::Bare, '#') => state = Lexical::Comment,
            (Lexical::Bare, '"') if starts("\"\"\"") => {
                state = Lexical::MultiBasic;
                take = 3;
            }
            (Lexical::Bare, '"') => state = Lexical::Basic,
            (Lexical::Bare, '\'') if starts("'''") => {
                state = Lexical::MultiLiteral;
                take = 3;
            }
            (Lexical::Bare, '\'') => state = Lexical::Literal,
            (Lexical::Basic, '"') | (Lexical::Literal, '\'') => state = Lexical::Bare,
            (Lexical::MultiBasic, '"') if starts("\"\"\"") => {
                state = Lexical::Bare;
                take = 3;
            }
            (Lexical::MultiLiteral, '\'') if starts("'''") => {
                state = Lexical::Bare;
                take = 3;
            }
            _ => {}
        }
        out.push_str(&rest[..take]);
        rest = &rest[take..];
    }
    if errors.is_empty() {
        Ok((out, values))
    } else {
        Err(errors)
    }
}

/// The value of `VAR` or `VAR:-default`.
fn expansion(inner: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`${{{inner}}}` is not a valid variable reference"));
    }
    match (lookup(name).filter(|v| !v.is_empty()), default) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set (write `${{{name}:-default}}` for a default)"
        )),
    }
}

/// Writes an expanded value as the TOML around it needs.
fn write_value(state: Lexical, inner: &str, value: &str, out: &mut String) -> Result<(), String> {
    let unquotable = |what: &str| {
        Err(format!(
            "the value of `${{{inner}}}` cannot be written inside a {what} string; use \"…\" quotes"
        ))
    };
    match state {
        Lexical::Basic | Lexical::MultiBasic => {
            for ch in value.chars() {
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
        }
        Lexical::Literal if value.contains(['\'', '\n', '\r']) => return unquotable("'…'"),
        Lexical::MultiLiteral if value.contains("'''") => return unquotable("'''…'''"),
        _ => out.push_str(value),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |k: &str| (k == "A").then(|| "1".to_string());
        assert_eq!(
            expand_env("x=${A} y=${B:-2} $${A}\n# ${C}\n", env).unwrap(),
            "x=1 y=2 ${A}\n# ${C}\n"
        );
        assert_eq!(expand_env("a\nb=${C}\n", env).unwrap_err()[0].0, 2);
        let secret = |k: &str| (k == "S").then(|| r#"p"a\ss"#.to_string());
        let text = expand_env(
            "h = { A = \"x ${S}\" } # ${NOPE}\nn = \"${S:-1}\"\n",
            secret,
        )
        .unwrap();
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["h"]["A"].as_str(), Some(r#"x p"a\ss"#));
        assert_eq!(v["n"].as_str(), Some(r#"p"a\ss"#));
        assert_eq!(
            expand_env("x = '${S}'\n", secret).unwrap(),
            "x = 'p\"a\\ss'\n"
        );
        let quote = |_: &str| Some("it's".to_string());
        let e = expand_env("x = '${Q}'\n", quote).unwrap_err();
        assert!(e[0].1.contains("use \"…\" quotes"), "{e:?}");
        assert_eq!(
            expand_env("x = 'a#${A}' # ${B}\n", env).unwrap(),
            "x = 'a#1' # ${B}\n"
        );
    }
}
