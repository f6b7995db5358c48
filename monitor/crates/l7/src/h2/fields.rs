//! What one decoded header block says: pseudo-headers, the few values the events report,
//! and the bounded header list (values only for [`super::KEPT_VALUES`]).

use super::event::Header;
use super::{
    KEPT_VALUES, MAX_GRPC_MESSAGE_LEN, MAX_NAME_LEN, MAX_PATH_LEN, MAX_REPORTED_HEADERS,
    MAX_VALUE_LEN,
};
use crate::escaped;

/// The fields of one decoded header block that the events report.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) scheme: Option<String>,
    pub(crate) status: Option<u16>,
    pub(crate) content_type: Option<String>,
    pub(crate) grpc_status: Option<u32>,
    pub(crate) grpc_message: Option<String>,
    pub(crate) headers: Vec<Header>,
    pub(crate) omitted: usize,
    pub(crate) truncated: bool,
    pub(crate) malformed: bool,
    pub(crate) regular_seen: bool,
}

impl Fields {
    fn text(&mut self, value: &[u8], max: usize) -> String {
        let (s, cut) = escaped(value, max);
        self.truncated |= cut;
        s
    }

    fn pseudo(&mut self, slot: fn(&mut Fields) -> &mut Option<String>, value: &[u8], max: usize) {
        let v = self.text(value, max);
        if self.regular_seen || slot(self).is_some() {
            self.malformed = true;
        } else {
            *slot(self) = Some(v);
        }
    }

    pub(crate) fn add(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":method" => self.pseudo(|f| &mut f.method, value, MAX_VALUE_LEN),
            b":path" => self.pseudo(|f| &mut f.path, value, MAX_PATH_LEN),
            b":authority" => self.pseudo(|f| &mut f.authority, value, MAX_VALUE_LEN),
            b":scheme" => self.pseudo(|f| &mut f.scheme, value, MAX_VALUE_LEN),
            b":status" => {
                if self.regular_seen || self.status.is_some() {
                    self.malformed = true;
                } else {
                    self.status = parse_decimal(value, 3).and_then(|v| u16::try_from(v).ok());
                    self.malformed |= self.status.is_none();
                }
            }
            _ if name.first() == Some(&b':') => {
                // Other pseudo-headers (`:protocol`) are listed like headers, without value.
                self.list(name, value);
            }
            _ => {
                self.regular_seen = true;
                match name {
                    b"content-type" if self.content_type.is_none() => {
                        self.content_type = Some(self.text(value, MAX_VALUE_LEN));
                    }
                    b"grpc-status" if self.grpc_status.is_none() => {
                        self.grpc_status = parse_decimal(value, 10);
                    }
                    b"grpc-message" if self.grpc_message.is_none() => {
                        self.grpc_message = Some(self.text(value, MAX_GRPC_MESSAGE_LEN));
                    }
                    _ => {}
                }
                self.list(name, value);
            }
        }
    }

    fn list(&mut self, name: &[u8], value: &[u8]) {
        if self.headers.len() >= MAX_REPORTED_HEADERS {
            self.omitted += 1;
            return;
        }
        let name_text = self.text(name, MAX_NAME_LEN);
        let value = KEPT_VALUES
            .iter()
            .any(|k| k.as_bytes() == name)
            .then(|| self.text(value, MAX_VALUE_LEN));
        self.headers.push(Header {
            name: name_text,
            value,
        });
    }
}

/// ASCII decimal of at most `max_digits` digits.
fn parse_decimal(value: &[u8], max_digits: usize) -> Option<u32> {
    if value.is_empty() || value.len() > max_digits || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u32, |acc, d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc;…` (case-insensitive).
pub(crate) fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct.get(..16)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
            && matches!(ct.get(16), None | Some(b'+' | b';'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=1",
        ] {
            assert!(is_grpc(Some(ct)), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/json",
            "application/grp",
        ] {
            assert!(!is_grpc(Some(ct)), "{ct}");
        }
        assert!(!is_grpc(None));
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"200", 3), Some(200));
        assert_eq!(parse_decimal(b"2000", 3), None);
        assert_eq!(parse_decimal(b"", 3), None);
        assert_eq!(parse_decimal(b"+1", 3), None);
        assert_eq!(
            parse_decimal(b"9999999999", 10),
            None,
            "overflow is not a status"
        );
    }

    #[test]
    fn status_and_kept_values() {
        let mut f = Fields::default();
        f.add(b":status", b"20x");
        assert!(f.malformed && f.status.is_none());
        let mut f = Fields::default();
        f.add(b"cookie", b"session=1");
        f.add(b"user-agent", b"ua\x01");
        f.add(b":path", b"/late");
        assert_eq!(f.headers[0].value, None);
        assert_eq!(f.headers[1].value.as_deref(), Some("ua\\x01"));
        assert!(
            f.malformed && f.path.is_none(),
            "pseudo-header after a regular one"
        );
    }
}
