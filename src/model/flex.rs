//! Burn tensors to and from flex primitives, for the model's own CPU kernels
//! ([`super::conv`], [`super::pool`]). Each conversion gives `None` where a kernel cannot take
//! the tensor (another backend, another dtype, gradient checkpointing), and the caller then
//! runs Burn's operation instead.

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Bytes, DType, Shape, Tensor};

/// A float tensor of `Autodiff<Flex>` (Burn's default, no gradient checkpointing).
pub type Tracked = FloatTensor<Autodiff<Flex, NoCheckpointing>>;

/// A flex f32 tensor without autodiff, made contiguous.
pub fn plain_f32<const D: usize>(t: Tensor<D>) -> Option<FlexTensor> {
    let t = t.try_into_primitive::<Flex>().ok()?;
    (t.dtype() == DType::F32).then(|| t.to_contiguous())
}

/// A flex f32 tensor lifted to autodiff (untracked if it was not under autodiff).
pub fn tracked_f32<const D: usize>(t: Tensor<D>) -> Option<Tracked> {
    let t = t.autodiff().try_into_primitive::<Autodiff<Flex>>().ok()?;
    (t.primitive().dtype() == DType::F32).then_some(t)
}

/// A contiguous f32 flex tensor of `shape` holding `data`.
pub fn flex_f32<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    let shape = Shape::from(shape.to_vec());
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}
