//! Keeping secrets out of what tailhook prints about its config: error
//! messages, the config lines they echo, and the log at a reload.
//!
//! A secret is any value a `${VAR}` expanded to, any string set on a line
//! whose key names a credential (`auth_value`, `password`, `token`, …), every
//! value of a `headers` table, and the password of a URL's user-info.

/// What the word `***` stands for in printed config text.
const MASK: &str = "***";

/// Keys (lower case, in part) whose string values are credentials.
const SECRET_KEYS: &[&str] = &[
    "auth",
    "password",
    "passwd",
    "secret",
    "token",
    "shared_key",
    "api_key",
    "apikey",
    "headers",
];

/// The secret values of one config text.
#[derive(Default)]
pub(crate) struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// Finds the secrets of a config: `text` as written, `expanded` after
    /// `${VAR}` expansion, `substituted` the values the expansion put in.
    pub(crate) fn find(text: &str, expanded: &str, substituted: &[String]) -> Secrets {
        let mut values: Vec<String> = substituted
            .iter()
            .filter(|v| v.trim().len() >= 4)
            .cloned()
            .collect();
        // As written, a `${VAR}` is not itself a secret (its value is, and
        // is in `substituted`): echoed lines show it.
        values.extend(
            secret_strings(text)
                .into_iter()
                .filter(|v| !v.contains("${")),
        );
        values.extend(secret_strings(expanded));
        values.retain(|v| v.len() >= 3);
        // Longest first, so a secret holding another is masked whole.
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Secrets { values }
    }

    /// `text` with every secret, and every URL password, replaced by `***`.
    pub(crate) fn mask(&self, text: &str) -> String {
        let mut out = mask_url_passwords(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }
}

/// The strings set on credential lines: `key = "value"` where the key names
/// a credential, and every value inside a `headers` table (inline or not).
fn secret_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_secret_table = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            let name = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("");
            in_secret_table = is_secret_key(name.rsplit('.').next().unwrap_or(name));
            continue;
        }
        let Some((key, _)) = split_key(trimmed) else {
            continue;
        };
        if in_secret_table || is_secret_key(key) {
            out.extend(values_after_equals(trimmed));
        }
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    let k = key.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
    !k.ends_with("_file") && !k.ends_with("_header") && SECRET_KEYS.iter().any(|s| k.contains(s))
}

/// The key before the first `=` outside quotes.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '=') => return Some((&line[..i], &line[i + 1..])),
            (None, '#') => return None,
            _ => {}
        }
    }
    None
}

/// Every quoted string that directly follows an `=` on the line (so header
/// names in an inline table are not taken, their values are).
fn values_after_equals(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut after_equals = false;
    while i < bytes.len() {
        match bytes[i] {
            b'=' => after_equals = true,
            b'"' | b'\'' => {
                let q = bytes[i];
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != q {
                    if q == b'"' && bytes[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                let end = j.min(bytes.len());
                if after_equals {
                    out.push(line[start..end].to_string());
                }
                after_equals = false;
                i = end;
            }
            b' ' | b'\t' => {}
            b'#' => break,
            _ => after_equals = false,
        }
        i += 1;
    }
    out
}

/// Replaces the password of every `scheme://user:password@` in `text`.
pub(crate) fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(user_end) => {
                let user_info = &authority[..user_end];
                match user_info.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(user_info),
                }
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// A URL with any password replaced, for printing.
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_and_the_rest_is_kept() {
        let text = "[[destination]]\nname = \"siem\"\nurl = \"ftp://user:hunter2@host/x\"\nheaders = { Authorization = \"Bearer supersecret123\", \"X-Env\" = 'prod-eu' }\n\n[[source]]\nauth_header = \"X-Token\"\nauth_value = \"${TOKEN}\"\nca_file = \"/etc/ca.pem\"\n[destination.headers]\nX-Api = \"abc123\"\n";
        let expanded = text.replace("${TOKEN}", "tok-4242");
        let s = Secrets::find(text, &expanded, &["tok-4242".to_string()]);
        let shown = s.mask(&expanded);
        for secret in ["hunter2", "supersecret123", "prod-eu", "tok-4242", "abc123"] {
            assert!(!shown.contains(secret), "{secret} in:\n{shown}");
        }
        for kept in [
            "ftp://user:***@host/x",
            "Authorization = \"***\"",
            "X-Token",
            "/etc/ca.pem",
            "siem",
        ] {
            assert!(shown.contains(kept), "{kept} not in:\n{shown}");
        }
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        assert_eq!(
            mask_url_passwords("see http://a/b and https://u@h:1/ `x://p:q@r`"),
            "see http://a/b and https://u@h:1/ `x://p:***@r`"
        );
    }
}
