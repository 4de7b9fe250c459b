//! IDX parsing and every bad-input case, on tiny files made here.

use std::path::Path;

use burn::tensor::Device;
use rampart::data::{self, DataError, Split};

/// Writes a Fashion-MNIST-named split of `n` images (pixel value = (index * 7 + position) % 256)
/// and the given labels.
fn write_split(dir: &Path, prefix: &str, n: usize, labels: &[u8], gz: bool) {
    let ext = if gz { ".gz" } else { "" };
    let pixels: Vec<u8> = (0..n * 784)
        .map(|i| ((i / 784) * 7 + i % 784) as u8)
        .collect();
    data::write_idx(
        &dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
        &[n, 28, 28],
        &pixels,
    )
    .unwrap();
    data::write_idx(
        &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
        &[labels.len()],
        labels,
    )
    .unwrap();
}

fn err_text(e: DataError) -> String {
    e.to_string()
}

#[test]
fn reads_plain_and_gzipped_idx_as_unit_pixels() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "t10k", 3, &[4, 0, 9], gz);
        let set = data::load_split(dir.path(), Split::Test, &Device::flex()).unwrap();
        assert_eq!(set.images.dims(), [3, 1, 28, 28]);
        let labels: Vec<i64> = set
            .labels
            .clone()
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .unwrap();
        assert_eq!(labels, vec![4, 0, 9]);
        let px: Vec<f32> = set.images.clone().into_data().try_to_vec().unwrap();
        // Image 1, position 10: (1 * 7 + 10) = 17 -> 17 / 255.
        assert!((px[784 + 10] - 17.0 / 255.0).abs() < 1e-7);
        // Image 0, position 300: 300 % 256 = 44.
        assert!((px[300] - 44.0 / 255.0).abs() < 1e-7);
        assert!(px.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }
}

#[test]
fn bad_magic_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "t10k", 2, &[1, 2], false);
    // A labels file where the images file should be.
    std::fs::copy(
        dir.path().join("t10k-labels-idx1-ubyte"),
        dir.path().join("t10k-images-idx3-ubyte"),
    )
    .unwrap();
    let e = err_text(data::load_split(dir.path(), Split::Test, &Device::flex()).unwrap_err());
    assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
    assert!(e.contains("bad magic number 0x00000801"), "{e}");
    assert!(e.contains("expected 0x00000803"), "{e}");
}

#[test]
fn truncated_file_is_reported_with_sizes() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "t10k", 2, &[1, 2], false);
    let path = dir.path().join("t10k-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = err_text(data::load_split(dir.path(), Split::Test, &Device::flex()).unwrap_err());
    assert!(e.contains("truncated"), "{e}");
    assert!(
        e.contains(&format!("promises {} bytes", 16 + 2 * 784)),
        "{e}"
    );
    assert!(e.contains(&path.display().to_string()), "{e}");

    // A file too short for its own header.
    std::fs::write(&path, [0u8, 0, 8]).unwrap();
    let e = err_text(data::load_split(dir.path(), Split::Test, &Device::flex()).unwrap_err());
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn corrupt_gzip_is_an_io_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "t10k", 2, &[1, 2], true);
    let path = dir.path().join("t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_text(data::load_split(dir.path(), Split::Test, &Device::flex()).unwrap_err());
    assert!(e.contains("t10k-images-idx3-ubyte.gz"), "{e}");
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", 3, &[1, 2], false);
    let e = err_text(data::load_split(dir.path(), Split::Train, &Device::flex()).unwrap_err());
    assert!(e.contains("holds 3 images"), "{e}");
    assert!(e.contains("holds 2 labels"), "{e}");
    assert!(e.contains("train-labels-idx1-ubyte"), "{e}");
}

#[test]
fn out_of_range_label_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", 2, &[1, 12], false);
    let e = err_text(data::load_split(dir.path(), Split::Train, &Device::flex()).unwrap_err());
    assert!(e.contains("label 12 at index 1"), "{e}");
}

#[test]
fn missing_files_and_directories_say_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_text(data::load_split(dir.path(), Split::Train, &Device::flex()).unwrap_err());
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    assert!(e.contains("scripts/fetch-data.sh"), "{e}");

    let gone = dir.path().join("nowhere");
    let e = err_text(data::resolve_data_dir(Some(&gone)).unwrap_err());
    assert!(e.contains("nowhere") && e.contains("--data-dir"), "{e}");
}

#[test]
fn data_dir_lookup_prefers_flag_then_environment() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // Only this test touches RAMPART_DATA in this test binary.
    unsafe { std::env::set_var(data::DATA_ENV, b.path()) };
    assert_eq!(data::resolve_data_dir(Some(a.path())).unwrap(), a.path());
    assert_eq!(data::resolve_data_dir(None).unwrap(), b.path());
    unsafe { std::env::set_var(data::DATA_ENV, a.path().join("missing")) };
    let e = data::resolve_data_dir(None).unwrap_err().to_string();
    assert!(e.contains("RAMPART_DATA") && e.contains("missing"), "{e}");
    unsafe { std::env::remove_var(data::DATA_ENV) };
}

#[test]
fn synthetic_set_is_seeded_labelled_and_in_range() {
    let d = Device::flex();
    let a = data::synthetic(64, 3, &d);
    let b = data::synthetic(64, 3, &d);
    let c = data::synthetic(64, 4, &d);
    assert!(a.name.contains("SYNTHETIC"));
    let pa: Vec<f32> = a.images.into_data().try_to_vec().unwrap();
    let pb: Vec<f32> = b.images.into_data().try_to_vec().unwrap();
    let pc: Vec<f32> = c.images.into_data().try_to_vec().unwrap();
    assert_eq!(pa, pb);
    assert_ne!(pa, pc);
    assert!(pa.iter().all(|&p| (0.0..=1.0).contains(&p)));
    let labels: Vec<i64> = a.labels.into_data().convert::<i64>().try_to_vec().unwrap();
    assert!(labels.iter().all(|&l| (0..10).contains(&l)));
    assert!(
        labels
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 8
    );
}

#[test]
fn every_picks_every_kth_example() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "t10k", 7, &[0, 1, 2, 3, 4, 5, 6], false);
    let set = data::load_split(dir.path(), Split::Test, &Device::flex()).unwrap();
    let picked = set.every(0, 3, Some(2));
    let labels: Vec<i64> = picked
        .labels
        .into_data()
        .convert::<i64>()
        .try_to_vec()
        .unwrap();
    assert_eq!(labels, vec![0, 3]);
}
