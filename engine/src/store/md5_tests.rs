//! The stores hash with `md5-simd` (assembly) for speed. Azure checks each
//! block's Content-MD5, but the blob's whole MD5 and `if-different` have no
//! such check, so every shape of input is held to RustCrypto's `md-5` here.

use md5::{Digest, Md5 as Reference};

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

#[test]
fn one_shot_digests_match_the_reference_at_every_padding_edge() {
    // 55/56 and 119/120 are where MD5's length field stops fitting in the
    // last block; 64-byte multiples are where no partial block is left.
    for len in [
        0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 65_537,
    ] {
        let d = data(len, len as u64);
        let want: [u8; 16] = Reference::digest(&d).into();
        assert_eq!(md5_simd::digest(&d), want, "length {len}");
    }
}

#[test]
fn streamed_digests_match_the_reference_whatever_the_chunking() {
    // A block upload feeds the whole-blob hasher a block at a time, and
    // `if-different` feeds it whatever chunks a store's read yields.
    let d = data(3 * 1024 * 1024 + 77, 7);
    let want: [u8; 16] = Reference::digest(&d).into();
    for chunk in [1, 63, 64, 65, 4096, 1 << 20] {
        let mut h = md5_simd::Md5::new();
        for c in d.chunks(chunk) {
            h.update(c);
        }
        assert_eq!(h.finalize(), want, "chunks of {chunk}");
    }
}
