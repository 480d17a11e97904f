//! The fuzz targets of `fuzz/` (see `src/fuzzing.rs`) on a bounded number of random and mutated
//! inputs, so that every `cargo test` runs them on stable Rust; `cargo fuzz` (docs/reliability.md)
//! explores far more.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20_000;

/// Inputs near the interesting ones: seeds with random bytes flipped, inserted, cut or joined.
fn inputs(seeds: &[&[u8]], seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..ROUNDS).map(move |_| {
        let mut input = seeds[rng.gen_range(0..seeds.len())].clone();
        for _ in 0..rng.gen_range(0..4) {
            match rng.gen_range(0..5) {
                0 if !input.is_empty() => {
                    let i = rng.gen_range(0..input.len());
                    input[i] = rng.gen();
                }
                1 => {
                    let i = rng.gen_range(0..=input.len());
                    let b = *[b'~', b'%', b'&', b'=', b'.', 0xff, 0, b'-', rng.gen()]
                        .get(rng.gen_range(0..9))
                        .unwrap();
                    input.insert(i, b);
                }
                2 if !input.is_empty() => input.truncate(rng.gen_range(0..input.len())),
                3 => {
                    let other = &seeds[rng.gen_range(0..seeds.len())];
                    input.extend_from_slice(other);
                }
                _ => input = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
            }
        }
        input
    })
}

#[test]
fn signatures() {
    let seeds: &[&[u8]] = &[
        b"secret\xffWkFJiWxhBDnG6tTh8\xffMC4wLmNKaWx5d1RWTmdteWJUc3A\xff12345",
        b"\xffINPUT\xffpcVagAsudj8dFqdlg7mG\xff",
        b"k\xffid\xff====\xff\xff\xff",
    ];
    for input in inputs(seeds, 1) {
        kvstore::fuzzing::signatures(&input);
    }
}

#[test]
fn query_params() {
    let seeds: &[&[u8]] = &[
        b"limit=10&offset=5&desc=1",
        b"limit=-1&limit=abc&unnamed=true",
        b"exclusiveStartKey=a%20b&prefix=%FF%00&token=x",
        b"limit=99999999999999999999999&desc=TRUE",
    ];
    for input in inputs(seeds, 2) {
        kvstore::fuzzing::query_params(&input);
    }
}

#[test]
fn store_refs() {
    let seeds: &[&[u8]] = &[
        b"WkFJiWxhBDnG6tTh8",
        b"~my-store",
        b"alice~my-store",
        b"a~b~c",
        b"INPUT.json",
    ];
    for input in inputs(seeds, 3) {
        kvstore::fuzzing::store_refs(&input);
    }
}
