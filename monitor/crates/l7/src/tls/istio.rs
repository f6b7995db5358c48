//! Istio's outbound cluster names used as SNI between sidecars:
//! `outbound_.<port>_.<subset>_.<fqdn>`, the subset possibly empty
//! (`outbound_.80_._.svc-user-profile.prod.svc.cluster.local`).

/// Longest name accepted (a DNS name is at most 253 bytes; the prefix and port add some).
const MAX_SNI_LEN: usize = 512;

/// A parsed Istio outbound SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioSni {
    /// Destination service port.
    pub port: u16,
    /// Destination rule subset (`""` when none).
    pub subset: String,
    /// The service's FQDN, as sent.
    pub fqdn: String,
    /// `<svc>` when the FQDN is `<svc>.<ns>.svc.<domain>`.
    pub service: Option<String>,
    /// `<ns>` when the FQDN is `<svc>.<ns>.svc.<domain>`.
    pub namespace: Option<String>,
}

/// Why a server name is not an Istio outbound SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IstioSniError {
    /// Does not start with `outbound_.`.
    #[error("not an Istio outbound SNI")]
    NotIstio,
    /// The port is not a number from 1 to 65535.
    #[error("Istio SNI port is not 1-65535")]
    Port,
    /// Missing `_.` separators, a subset or FQDN with characters a DNS name cannot have, an
    /// empty FQDN label, or a name over 512 bytes.
    #[error("Istio SNI is not outbound_.<port>_.<subset>_.<fqdn>")]
    Shape,
}

impl IstioSni {
    /// Parses `outbound_.<port>_.<subset>_.<fqdn>`.
    pub fn parse(sni: &str) -> Result<IstioSni, IstioSniError> {
        let rest = sni
            .strip_prefix("outbound_.")
            .ok_or(IstioSniError::NotIstio)?;
        if sni.len() > MAX_SNI_LEN {
            return Err(IstioSniError::Shape);
        }
        let (port, rest) = rest.split_once("_.").ok_or(IstioSniError::Shape)?;
        let port: u16 = (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
            .then(|| port.parse().ok())
            .flatten()
            .filter(|&p| p != 0)
            .ok_or(IstioSniError::Port)?;
        let (subset, fqdn) = rest.split_once("_.").ok_or(IstioSniError::Shape)?;
        let subset_ok = subset
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        let fqdn_ok = !fqdn.is_empty()
            && fqdn.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !subset_ok || !fqdn_ok {
            return Err(IstioSniError::Shape);
        }
        let labels: Vec<&str> = fqdn.split('.').collect();
        let (service, namespace) = match labels.as_slice() {
            [svc, ns, "svc", _domain, ..] => (Some((*svc).to_owned()), Some((*ns).to_owned())),
            _ => (None, None),
        };
        Ok(IstioSni {
            port,
            subset: subset.to_owned(),
            fqdn: fqdn.to_owned(),
            service,
            namespace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_subset() {
        let s = IstioSni::parse("outbound_.80_._.svc-user-profile.prod.svc.cluster.local").unwrap();
        assert_eq!(s.port, 80);
        assert_eq!(s.subset, "");
        assert_eq!(s.fqdn, "svc-user-profile.prod.svc.cluster.local");
        assert_eq!(s.service.as_deref(), Some("svc-user-profile"));
        assert_eq!(s.namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn subset_and_external_fqdn() {
        let s = IstioSni::parse("outbound_.9080_.v1_.reviews.default.svc.cluster.local").unwrap();
        assert_eq!((s.port, s.subset.as_str()), (9080, "v1"));
        assert_eq!(s.service.as_deref(), Some("reviews"));
        let s = IstioSni::parse("outbound_.443_._.api.stripe.com").unwrap();
        assert_eq!((s.service, s.namespace), (None, None));
        assert_eq!(s.fqdn, "api.stripe.com");
    }

    #[test]
    fn rejects() {
        assert_eq!(
            IstioSni::parse("api.stripe.com"),
            Err(IstioSniError::NotIstio)
        );
        assert_eq!(
            IstioSni::parse("inbound_.80_._.a.b"),
            Err(IstioSniError::NotIstio)
        );
        assert_eq!(
            IstioSni::parse("outbound_.0_._.a.b"),
            Err(IstioSniError::Port)
        );
        assert_eq!(
            IstioSni::parse("outbound_.65536_._.a.b"),
            Err(IstioSniError::Port)
        );
        assert_eq!(
            IstioSni::parse("outbound_.+80_._.a.b"),
            Err(IstioSniError::Port)
        );
        assert_eq!(
            IstioSni::parse("outbound_.80_._."),
            Err(IstioSniError::Shape)
        );
        assert_eq!(
            IstioSni::parse("outbound_.80_.a.b"),
            Err(IstioSniError::Shape)
        );
        assert_eq!(
            IstioSni::parse("outbound_.80_._.a..b"),
            Err(IstioSniError::Shape)
        );
        assert_eq!(
            IstioSni::parse("outbound_.80_._.a.b/c"),
            Err(IstioSniError::Shape)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = IstioSni::parse(&s);
            let _ = IstioSni::parse(&format!("outbound_.{s}"));
        }
    }
}
