//! Where a person came from (an access panel), and may be sent back to: only URLs whose origin
//! the administrator allowed, after full parsing, so `//evil`, `/\evil`, `https:evil`, user-info
//! tricks and encodings are all judged by the host they really name.

/// The URL to send the person back to, if `raw` is an absolute http(s) URL on an allowed origin.
pub fn allowed(raw: &str, allowed_origins: &[String]) -> Option<String> {
    if raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let url = url::Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "https" | "http") || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    allowed_origins.iter().any(|a| a.trim_end_matches('/') == origin).then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Vec<String> {
        vec!["https://apps.example.org".into()]
    }

    #[test]
    fn only_an_allowed_origin_is_followed() {
        assert_eq!(
            allowed("https://apps.example.org/home?x=1", &apps()).as_deref(),
            Some("https://apps.example.org/home?x=1")
        );
        assert_eq!(allowed("https://APPS.example.org/", &apps()).as_deref(), Some("https://apps.example.org/"));
        for bad in [
            "https://evil.example/",
            "//apps.example.org/",
            "/\\evil.example",
            "https:evil.example",
            "https://apps.example.org@evil.example/",
            "https://apps.example.org.evil.example/",
            "http://apps.example.org/",
            "https://apps.example.org:8443/",
            "javascript:alert(1)",
            "https://apps.example.org\\@evil.example",
            "/relative/path",
            "",
        ] {
            assert_eq!(allowed(bad, &apps()), None, "{bad}");
        }
        assert_eq!(allowed("https://apps.example.org/", &[]), None, "nothing is allowed by default");
    }
}
