//! Feed arbitrary bytes to the decoder in arbitrary chunk sizes: it must never
//! panic, and every frame it accepts must re-encode to a frame it accepts again.
//! Run with `cargo +nightly fuzz run decoder` from `firmware-host/protocol`.
#![no_main]

use diffbc_protocol::{Decoder, MAX_FRAME, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let mut d = Decoder::new();
    for piece in bytes.chunks(chunk.max(1) as usize) {
        let mut rest = piece;
        loop {
            let (r, tail) = d.feed(rest);
            match r {
                Some(Ok(frame)) => {
                    let mut buf = [0u8; MAX_FRAME];
                    let n = encode(&frame, &mut buf).expect("an accepted frame re-encodes");
                    let mut again = Decoder::new();
                    let (r2, _) = again.feed(&buf[..n]);
                    assert_eq!(r2, Some(Ok(frame)));
                }
                Some(Err(_)) => {}
                None => break,
            }
            rest = tail;
        }
    }
});
