//! Grey images from PNG bytes, decoded under limits set before any allocation.

use crate::model::image::IMAGE_SHAPE;

/// Largest encoded PNG, bytes.
pub const MAX_PNG: usize = 1 << 20;

/// The pixels (in [0, 1], row-major) of a PNG the size the models read (28×28; colour is
/// turned grey); errors say what is wrong with it.
pub fn decode(bytes: Vec<u8>) -> Result<Vec<f32>, String> {
    let [_, h, w] = IMAGE_SHAPE;
    if bytes.len() > MAX_PNG {
        return Err(format!("larger than {MAX_PNG} bytes"));
    }
    let mut reader =
        image::io::Reader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::io::Limits::default();
    limits.max_image_width = Some(w as u32);
    limits.max_image_height = Some(h as u32);
    limits.max_alloc = Some(1 << 20);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("not a {w}×{h} PNG ({e})"))?;
    if (img.width(), img.height()) != (w as u32, h as u32) {
        return Err(format!(
            "{}×{}; the model reads {w}×{h} images",
            img.width(),
            img.height()
        ));
    }
    Ok(img
        .to_luma8()
        .pixels()
        .map(|p| f32::from(p.0[0]) / 255.0)
        .collect())
}
