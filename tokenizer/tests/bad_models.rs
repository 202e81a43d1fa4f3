//! Malformed `.model` input: truncated protobufs, wrong field types, missing pieces — errors, never panics.

mod common;

use common::fixture;
use mezcla_tokenizer::SentencePieceModel;

#[test]
fn truncations_and_corruptions_are_errors() {
    let bytes = std::fs::read(fixture("hi_unigram_64_identity.model")).unwrap();
    let mut errors = 0;
    for cut in 0..bytes.len() {
        // Every prefix either fails cleanly or (rarely, when cut at a field boundary) parses.
        match SentencePieceModel::from_bytes(&bytes[..cut], "x.model") {
            Err(e) => {
                assert!(
                    e.to_string()
                        .starts_with("x.model: not a valid SentencePiece model"),
                    "{e}"
                );
                errors += 1;
            }
            Ok(m) => {
                let _ = m.encode("नमस्ते दुनिया");
            }
        }
    }
    assert!(errors > bytes.len() / 2);
    // Flip bytes one at a time: no panic, and encoding still works when it loads.
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0xa5;
        if let Ok(m) = SentencePieceModel::from_bytes(&b, "x.model") {
            let ids = m.encode_ids("नमस्ते दुनिया abc");
            let _ = m.decode(&ids);
        }
    }
}

#[test]
fn wrong_field_types_are_named() {
    // field 1 (pieces) as a varint instead of a message
    let e = SentencePieceModel::from_bytes(&[0x08, 0x01], "m")
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong wire type"), "{e}");
    // a piece whose score (field 2) is a varint
    let piece = [0x0a, 0x03, b'<', b'u', b'>', 0x10, 0x01];
    let mut m = vec![0x0a, piece.len() as u8];
    m.extend_from_slice(&piece);
    let e = SentencePieceModel::from_bytes(&m, "m")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("piece 0") && e.contains("wrong wire type"),
        "{e}"
    );
    // no pieces at all
    let e = SentencePieceModel::from_bytes(&[], "m")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no pieces"), "{e}");
    // not a protobuf
    let e = SentencePieceModel::from_bytes(b"hello, this is text\n", "m")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("m: not a valid SentencePiece model"), "{e}");
    let e = SentencePieceModel::load("/nonexistent/dir/x.model")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/dir/x.model"), "{e}");
}
