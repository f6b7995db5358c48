//! ClientHello parsing, Istio SNI parsing and the record scanner on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monitor_l7::tls::{IstioSni, TlsRecordScanner, parse_client_hello};

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = parse_client_hello(data) {
        assert!(hello.consumed <= data.len());
        if let Some(sni) = &hello.sni {
            let _ = IstioSni::parse(sni);
        }
    }
    // The record scanner: whole, and split in two at a point the data chooses.
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut whole = TlsRecordScanner::new();
    whole.feed(data);
    let mut split = TlsRecordScanner::new();
    split.feed(&data[..cut]);
    split.feed(&data[cut..]);
    assert_eq!(whole.tls_bytes(), split.tls_bytes());
    assert_eq!(whole.non_tls_bytes(), split.non_tls_bytes());
    assert_eq!(
        whole.tls_bytes() + whole.non_tls_bytes() + whole.pending_bytes(),
        data.len() as u64
    );
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = IstioSni::parse(s);
    }
});
