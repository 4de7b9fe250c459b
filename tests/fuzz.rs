//! Property tests of the parsers of untrusted files (safetensors headers and model files, IDX
//! headers, ensemble manifests, JSONL records): arbitrary and adversarially structured input
//! never panics, and nothing allocates in proportion to a size the input declares before the
//! declaration is checked against the input (a counting allocator measures each call's peak).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use burn::tensor::Device;
use proptest::prelude::*;
use rampart::artifact::{self, Manifest};
use rampart::data::idx;
use rampart::data::records::{self, Schema};

struct Counting;

// Per thread, so that what other tests' threads allocate meanwhile is not counted. Const
// thread-locals of plain cells need no initialisation or destructor: safe in the allocator.
thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grow(by: isize) {
    let _ = CURRENT.try_with(|c| {
        let now = c.get() + by;
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        grow(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new) };
        if !q.is_null() {
            grow(new as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most `f` allocated at once on this thread above what was allocated when it started,
/// and its result.
fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, (PEAK.with(Cell::get) - base).max(0) as usize)
}

const MIB: usize = 1 << 20;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A safetensors file whose header declares one tensor with arbitrary dtype, shape and
/// offsets, and arbitrary Rampart metadata, followed by a few bytes of data.
fn safetensors_file() -> impl Strategy<Value = Vec<u8>> {
    let dims = prop::collection::vec(
        prop_oneof![0u64..4, 1u64..1000, Just(u32::MAX as u64), Just(1u64 << 40)],
        0..4,
    );
    let spec = prop_oneof![
        Just(String::new()),
        (prop_oneof![0u64..20, Just(1_000_000_000_000u64)], -2.0f64..2.0).prop_map(
            |(k, std)| format!(
                r#","__metadata__":{{"rampart.spec":"{{\"arch\":\"mlp\",\"num_classes\":{k},\"mean\":0.0,\"std\":{std}}}"}}"#
            )
        ),
        Just(r#","__metadata__":{"rampart.fusion":"{\"class_names\":[\"a\",\"b\"],\"network_box\":[[0,1]],\"modalities\":[\"network\"],\"fusion\":\"gated\",\"dim\":100000000}"}"#.to_string()),
        // A spec that validates but would build a 400 MB network from a 500 KB file.
        Just(format!(
            r#","__metadata__":{{"rampart.fusion":"{{\"class_names\":[{}],\"network_box\":[[0,1]],\"modalities\":[\"text\",\"network\"],\"fusion\":\"concat\",\"dim\":1024}}"}}"#,
            vec![r#"\"c\""#; 100_000].join(",")
        )),
    ];
    (
        prop_oneof![Just("F32"), Just("F64"), Just("I64"), Just("U8"), Just("XX")],
        dims,
        0u64..64,
        prop_oneof![0u64..64, Just(1u64 << 40)],
        spec,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(dtype, shape, start, end, meta, data)| {
            let header = format!(
                r#"{{"fc3.weight":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{start},{end}]}}{meta}}}"#
            );
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend(header.as_bytes());
            bytes.extend(data);
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn model_files_never_panic_or_allocate_what_they_declare(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..256), safetensors_file()]
    ) {
        let _turn = common::serial();
        let path = Path::new("fuzz.safetensors");
        let len = bytes.len();
        let (_, used) = peak(|| artifact::load_bytes(bytes, path, None, &Device::flex()));
        prop_assert!(used < 16 * MIB, "{used} bytes allocated for a {len}-byte file");
    }

    #[test]
    fn idx_headers_never_panic_or_allocate_what_they_declare(
        ndim in 0u8..5,
        kind in prop_oneof![Just(0x08u8), any::<u8>()],
        dims in prop::collection::vec(prop_oneof![0u32..100, Just(u32::MAX), 1u32..(1 << 20)], 0..5),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _turn = common::serial();
        let mut bytes = vec![0, 0, kind, ndim];
        for d in &dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(&body);
        let len = bytes.len();
        let (result, used) = peak(|| idx::parse(std::io::Cursor::new(bytes), Path::new("f"), ndim.max(1), "fuzz"));
        prop_assert!(used < len + 64 * 1024, "{used} bytes allocated for {len} bytes");
        if let Ok((d, data)) = result {
            prop_assert_eq!(data.len(), d.iter().product::<usize>());
        }
    }

    #[test]
    fn manifests_never_panic(
        strategy in prop_oneof![Just("mean_probs"), Just("voting"), Just("")],
        members in prop::collection::vec(
            ("[ -~]{0,24}", "[0-9a-f]{0,64}", prop_oneof![Just("1.0".to_string()), Just("-1".to_string()), Just("1e400".to_string()), Just("\"x\"".to_string())]),
            0..4,
        ),
        noise in "[ -~\n]{0,64}",
        json in any::<bool>(),
    ) {
        let _turn = common::serial();
        let mut text = format!("strategy = \"{strategy}\"\n");
        for (path, sha, weight) in &members {
            text.push_str(&format!("[[member]]\npath = {path:?}\nsha256 = \"{sha}\"\nweight = {weight}\n"));
        }
        text.push_str(&noise);
        let len = text.len();
        let (_, used) = peak(|| Manifest::parse(&text, json));
        prop_assert!(used < 64 * len + MIB);
    }

    #[test]
    fn jsonl_records_never_panic_or_allocate_beyond_the_text(
        lines in prop::collection::vec(
            prop_oneof![
                "[ -~]{0,80}",
                (any::<usize>(), prop::collection::vec(-1e3f64..1e3, 0..12), "[ -~]{0,30}", "[A-Za-z0-9+/=]{0,20}")
                    .prop_map(|(label, net, text, b64)| format!(
                        r#"{{"text": {text:?}, "bytes_b64": "{b64}", "network": {net:?}, "label": {label}}}"#
                    )),
            ],
            0..8,
        )
    ) {
        let _turn = common::serial();
        let text = lines.join("\n");
        let schema = Schema { num_classes: 4, network_box: vec![(0.0, 1.0); 8] };
        let len = text.len();
        let (result, used) = peak(|| records::parse_jsonl(&text, Path::new("f.jsonl"), &schema));
        prop_assert!(used < 64 * len + MIB, "{used} bytes for {len}");
        if let Ok(rs) = result {
            prop_assert!(rs.iter().all(|r| r.label < 4));
        }
    }
}

/// The counter sees what this thread allocates, and not what another thread does meanwhile.
#[test]
fn the_allocation_counter_counts_this_thread_only() {
    let (_, used) = peak(|| std::hint::black_box(vec![1u8; 3 * MIB]).len());
    assert!(used >= 3 * MIB, "{used}");
    let (_, used) = peak(|| {
        std::thread::spawn(|| std::hint::black_box(vec![1u8; 3 * MIB]).len())
            .join()
            .unwrap()
    });
    assert!(used < MIB, "{used}");
}
