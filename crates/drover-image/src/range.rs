//! What a transfer endpoint answers to a `GET` of a library file: the whole file, one byte
//! range, or a refusal. The file's SHA-256 is its strong ETag, so `If-Range` and `If-Match` make
//! sure a resumed download never joins bytes of two versions of a file.

/// The request headers that matter, as sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeRequest<'a> {
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub if_match: Option<&'a str>,
}

/// How to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 412: `If-Match` names another version.
    PreconditionFailed,
    /// 416: the range lies outside the file or is malformed.
    NotSatisfiable,
}

/// The strong ETag of a file whose hex SHA-256 is `sha256`.
pub fn etag(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

/// Decides the answer for a file of `length` bytes whose ETag is `etag`.
pub fn decide(request: RangeRequest<'_>, etag: &str, length: u64) -> RangeAnswer {
    if let Some(wanted) = request.if_match {
        let matches = wanted.trim() == "*" || wanted.split(',').any(|tag| tag.trim() == etag);
        if !matches {
            return RangeAnswer::PreconditionFailed;
        }
    }
    let Some(range) = request.range else {
        return RangeAnswer::Full;
    };
    // An If-Range that is not our ETag (another version, or a date) asks for the whole file.
    if request.if_range.is_some_and(|tag| tag.trim() != etag) {
        return RangeAnswer::Full;
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return RangeAnswer::NotSatisfiable;
    };
    match parsed.validate(length).as_deref() {
        Ok([only]) => RangeAnswer::Partial {
            start: *only.start(),
            end: *only.end(),
        },
        // Several ranges (never sent by Drover) or an empty file: the whole file is a valid answer.
        Ok(_) => RangeAnswer::Full,
        Err(_) => RangeAnswer::NotSatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let tag = etag("abc");
        let cases: [(RangeRequest<'_>, RangeAnswer); 9] = [
            (RangeRequest::default(), RangeAnswer::Full),
            (
                RangeRequest {
                    range: Some("bytes=10-"),
                    ..Default::default()
                },
                RangeAnswer::Partial { start: 10, end: 99 },
            ),
            (
                RangeRequest {
                    range: Some("bytes=0-9"),
                    if_range: Some("\"abc\""),
                    ..Default::default()
                },
                RangeAnswer::Partial { start: 0, end: 9 },
            ),
            (
                RangeRequest {
                    range: Some("bytes=10-"),
                    if_range: Some("\"other\""),
                    ..Default::default()
                },
                RangeAnswer::Full,
            ),
            (
                RangeRequest {
                    range: Some("bytes=10-"),
                    if_range: Some("Tue, 24 Nov 2026 10:00:00 GMT"),
                    ..Default::default()
                },
                RangeAnswer::Full,
            ),
            (
                RangeRequest {
                    if_match: Some("\"other\""),
                    ..Default::default()
                },
                RangeAnswer::PreconditionFailed,
            ),
            (
                RangeRequest {
                    range: Some("bytes=5-"),
                    if_match: Some("\"x\", \"abc\""),
                    ..Default::default()
                },
                RangeAnswer::Partial { start: 5, end: 99 },
            ),
            (
                RangeRequest {
                    range: Some("bytes=100-"),
                    ..Default::default()
                },
                RangeAnswer::NotSatisfiable,
            ),
            (
                RangeRequest {
                    range: Some("lines=1-2"),
                    ..Default::default()
                },
                RangeAnswer::NotSatisfiable,
            ),
        ];
        for (request, answer) in cases {
            assert_eq!(decide(request, &tag, 100), answer, "{request:?}");
        }
    }
}
