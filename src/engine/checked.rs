//! Checked versions of the built-ins that take a size. The memory cap is checked by the
//! progress callback between operations, but one call such as `"a".pad(1000000000000000, "b")`
//! or `blob(1000000000000000)` asks for everything at once, inside a single operation: the
//! process was killed by the kernel or aborted on a failed allocation. These versions, found
//! before Rhai's own (the engine's namespace comes first), compute what the call would
//! allocate and stop the script with "memory limit exceeded" when it does not fit under the
//! cap; otherwise they do what Rhai's do.

use super::MEMORY_TOKEN;
use crate::alloc;
use rhai::{
    Array, Blob, Dynamic, Engine, EvalAltResult, FuncRegistration, INT, ImmutableString, Position,
};

type Checked<T> = Result<T, Box<EvalAltResult>>;

/// Fails like the progress callback does when `bytes` more would pass the cap.
fn reserve(cap: usize, bytes: u128) -> Checked<()> {
    let headroom = cap.saturating_sub(alloc::allocated()) as u128;
    if bytes > headroom {
        return Err(Box::new(EvalAltResult::ErrorTerminated(
            Dynamic::from(MEMORY_TOKEN),
            Position::NONE,
        )));
    }
    Ok(())
}

/// The target length of a pad, or `None` when nothing is to be added.
fn grow_to(len: INT, current: usize) -> Option<usize> {
    let len = usize::try_from(len).ok()?;
    (len > current).then_some(len)
}

/// An estimate of one copy of `value` (its heap parts included) for padding arrays.
fn size_of_value(value: &Dynamic) -> u128 {
    let base = std::mem::size_of::<Dynamic>() as u128;
    if value.is_string() {
        base + value
            .clone()
            .into_immutable_string()
            .map_or(0, |s| s.len() as u128)
    } else if value.is_blob() {
        base + value.clone().cast::<Blob>().len() as u128
    } else if value.is_array() {
        let array = value.clone().cast::<Array>();
        base + array.iter().map(size_of_value).sum::<u128>()
    } else {
        base
    }
}

pub fn register(engine: &mut Engine, cap: usize) {
    FuncRegistration::new("pad")
        .with_params_info(["string: &mut String", "len: int", "character: char", "()"])
        .with_comments(["/// Pads the string to `len` characters with `character` (checked against the memory cap)."])
        .register_into_engine(
        engine,
        move |text: &mut ImmutableString, len: INT, character: char| -> Checked<()> {
            let current = text.chars().count();
            let Some(len) = grow_to(len, current) else {
                return Ok(());
            };
            reserve(cap, (len - current) as u128 * character.len_utf8() as u128)?;
            let owned = text.make_mut();
            owned.extend(std::iter::repeat_n(character, len - current));
            Ok(())
        },
    );
    FuncRegistration::new("pad")
        .with_params_info(["string: &mut String", "len: int", "padding: String", "()"])
        .with_comments(["/// Pads the string to `len` characters with copies of `padding` (checked against the memory cap)."])
        .register_into_engine(
        engine,
        move |text: &mut ImmutableString, len: INT, padding: &str| -> Checked<()> {
            let current = text.chars().count();
            let padding_len = padding.chars().count();
            let Some(len) = grow_to(len, current) else {
                return Ok(());
            };
            if padding_len == 0 {
                // Rhai's own version loops for ever here.
                return Ok(());
            }
            let repeats = (len - current).div_ceil(padding_len) as u128;
            reserve(cap, repeats * padding.len() as u128)?;
            let owned = text.make_mut();
            owned.extend(padding.chars().cycle().take(len - current));
            Ok(())
        },
    );
    FuncRegistration::new("blob")
        .with_params_info(["len: int", "Blob"])
        .with_comments(["/// A BLOB of `len` zero bytes (checked against the memory cap)."])
        .register_into_engine(engine, move |len: INT| blob(cap, len, 0));
    FuncRegistration::new("blob")
        .with_params_info(["len: int", "value: int", "Blob"])
        .with_comments([
            "/// A BLOB of `len` copies of the byte `value` (checked against the memory cap).",
        ])
        .register_into_engine(engine, move |len: INT, value: INT| blob(cap, len, value));
    FuncRegistration::new("pad")
        .with_params_info(["blob: &mut Blob", "len: int", "value: int", "()"])
        .with_comments([
            "/// Pads the BLOB to `len` bytes with `value` (checked against the memory cap).",
        ])
        .register_into_engine(
            engine,
            move |blob: &mut Blob, len: INT, value: INT| -> Checked<()> {
                let Some(len) = grow_to(len, blob.len()) else {
                    return Ok(());
                };
                reserve(cap, (len - blob.len()) as u128)?;
                blob.resize(len, (value & 0xff) as u8);
                Ok(())
            },
        );
    FuncRegistration::new("pad")
        .with_params_info(["array: &mut Array", "len: int", "item: Dynamic", "()"])
        .with_comments(["/// Pads the array to `len` items with copies of `item` (checked against the memory cap)."])
        .register_into_engine(
        engine,
        move |array: &mut Array, len: INT, item: Dynamic| -> Checked<()> {
            let Some(len) = grow_to(len, array.len()) else {
                return Ok(());
            };
            reserve(cap, (len - array.len()) as u128 * size_of_value(&item))?;
            array.resize(len, item);
            Ok(())
        },
    );
}

fn blob(cap: usize, len: INT, value: INT) -> Checked<Blob> {
    let Some(len) = grow_to(len, 0) else {
        return Ok(Blob::new());
    };
    reserve(cap, len as u128)?;
    Ok(vec![(value & 0xff) as u8; len])
}
