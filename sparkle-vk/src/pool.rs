//! Device memory for ops: a pool of buffers reused across ops (fresh allocations cost page faults
//! and driver calls on every op), the per-purpose workspaces, and the staging copies to and from
//! the host. Owns its allocator; knows nothing of shaders or submissions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vulkano::buffer::{Buffer, BufferCreateInfo, BufferUsage, Subbuffer};
use vulkano::command_buffer::{AutoCommandBufferBuilder, CopyBufferInfo, PrimaryAutoCommandBuffer};
use vulkano::memory::allocator::{AllocationCreateInfo, MemoryTypeFilter, StandardMemoryAllocator};

use crate::error::{api, Result, VkError};

/// Workspaces an op needs beside its operands ([`Pool::scratch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scratch {
    /// Split-K partial tiles.
    SplitK,
    /// Winograd's transformed weights, input and products.
    WinogradU,
    WinogradV,
    WinogradM,
}

/// Most bytes of idle buffers the pool keeps per device.
const POOL_BYTES: u64 = 2 << 30;

/// One device's buffers.
#[derive(Debug)]
pub(crate) struct Pool {
    memory: Arc<StandardMemoryAllocator>,
    /// The most floats one buffer may hold: the device's largest storage-buffer range.
    most: u64,
    /// Buffers for reuse: (usage, memory filter, the whole buffer).
    #[allow(clippy::type_complexity)]
    buffers: Mutex<Vec<(BufferUsage, MemoryTypeFilter, Subbuffer<[f32]>)>>,
    /// Workspaces by purpose, reused by every op (see [`Pool::scratch`]).
    scratch: Mutex<HashMap<Scratch, Subbuffer<[f32]>>>,
}

impl Pool {
    /// An empty pool allocating from `memory`, no buffer over `max_storage_buffer_range` bytes.
    pub(crate) fn new(memory: Arc<StandardMemoryAllocator>, max_storage_buffer_range: u32) -> Self {
        Pool {
            memory,
            most: u64::from(max_storage_buffer_range) / 4,
            buffers: Mutex::default(),
            scratch: Mutex::default(),
        }
    }

    /// The allocator (for buffers outside the pool).
    pub(crate) fn memory(&self) -> &Arc<StandardMemoryAllocator> {
        &self.memory
    }

    /// The most floats one buffer may hold.
    pub(crate) fn most_floats(&self) -> u64 {
        self.most
    }

    /// Bytes of device and staging buffers the pool holds (in use or idle).
    pub(crate) fn pooled_bytes(&self) -> u64 {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, _, b)| b.size()).sum()
    }

    /// `len` floats of a buffer with this usage and memory, from the pool when a free one fits
    /// (a buffer is free when the pool holds its only reference: every command that used it has
    /// completed and been dropped), else newly allocated with a power-of-two capacity and pooled.
    /// Fresh allocations cost page faults and driver calls on every op; reuse removes them.
    pub(crate) fn buffer(&self, len: usize, usage: BufferUsage, filter: MemoryTypeFilter) -> Result<Subbuffer<[f32]>> {
        // The shaders index with 32 bits and bind whole buffers: nothing larger than the
        // device's largest storage-buffer range can be used (nor allocated: vulkano panics on
        // byte sizes that overflow).
        let most = self.most;
        let len = len.max(1) as u64;
        if len > most {
            return Err(VkError::OutOfMemory(
                format!("{len} floats exceed the device's largest storage buffer ({most} floats)").into(),
            ));
        }
        let mut pool = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        let free = |b: &Subbuffer<[f32]>| Arc::strong_count(b.buffer()) == 1;
        let fits = pool
            .iter()
            .filter(|(u, f, b)| {
                *u == usage && *f == filter && b.len() >= len && b.len() <= 4 * len.max(1024) && free(b)
            })
            .min_by_key(|(_, _, b)| b.len());
        if let Some((_, _, b)) = fits {
            return Ok(b.clone().slice(0..len));
        }
        let capacity = len.checked_next_power_of_two().unwrap_or(len).min(most);
        let full = Buffer::new_slice::<f32>(
            self.memory.clone(),
            BufferCreateInfo { usage, ..Default::default() },
            AllocationCreateInfo { memory_type_filter: filter, ..Default::default() },
            capacity,
        )
        .map_err(api("allocating a buffer"))?;
        // Keep the pool under POOL_BYTES by dropping free buffers, largest first.
        let mut total: u64 = pool.iter().map(|(_, _, b)| b.size()).sum::<u64>() + full.size();
        while total > POOL_BYTES {
            let Some(i) =
                pool.iter().enumerate().filter(|(_, e)| free(&e.2)).max_by_key(|(_, e)| e.2.size()).map(|(i, _)| i)
            else {
                break;
            };
            total -= pool.swap_remove(i).2.size();
        }
        pool.push((usage, filter, full.clone()));
        Ok(full.slice(0..len))
    }

    /// A device-local buffer filled from `data` through a staging buffer (copy recorded in `cb`).
    pub(crate) fn upload(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        data: &[f32],
    ) -> Result<Subbuffer<[f32]>> {
        self.upload_into(cb, data, BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_DST | BufferUsage::TRANSFER_SRC)
    }

    /// A device-local buffer of 32-bit words (packed halves) filled from `data`: the pool's
    /// 4-byte elements, seen as words for the copy.
    pub(crate) fn upload_words(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        data: &[u32],
    ) -> Result<Subbuffer<[f32]>> {
        let data = if data.is_empty() { &[0u32][..] } else { data };
        let staging = self.buffer(
            data.len(),
            BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::PREFER_HOST | MemoryTypeFilter::HOST_SEQUENTIAL_WRITE,
        )?;
        staging.clone().reinterpret::<[u32]>().write().map_err(api("mapping a staging buffer"))?.copy_from_slice(data);
        let usage = BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_DST | BufferUsage::TRANSFER_SRC;
        let dst = self.buffer(data.len(), usage, MemoryTypeFilter::PREFER_DEVICE)?;
        cb.copy_buffer(CopyBufferInfo::buffers(staging, dst.clone())).map_err(api("recording an upload"))?;
        Ok(dst)
    }

    /// A buffer with this usage filled from `data` through a staging buffer (copy recorded in `cb`).
    pub(crate) fn upload_into(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        data: &[f32],
        usage: BufferUsage,
    ) -> Result<Subbuffer<[f32]>> {
        // Vulkan has no empty buffers: an empty operand (e.g. no bias) is one unused zero.
        let data = if data.is_empty() { &[0.0f32][..] } else { data };
        let staging = self.buffer(
            data.len(),
            BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::PREFER_HOST | MemoryTypeFilter::HOST_SEQUENTIAL_WRITE,
        )?;
        // One memcpy into the mapped staging memory (an element iterator ran at a few GB/s).
        staging.write().map_err(api("mapping a staging buffer"))?.copy_from_slice(data);
        let dst = self.buffer(data.len(), usage, MemoryTypeFilter::PREFER_DEVICE)?;
        cb.copy_buffer(CopyBufferInfo::buffers(staging, dst.clone())).map_err(api("recording an upload"))?;
        Ok(dst)
    }

    pub(crate) fn readback(
        &self,
        cb: &mut AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>,
        src: &Subbuffer<[f32]>,
        len: usize,
    ) -> Result<Subbuffer<[f32]>> {
        let host = self.buffer(
            len,
            BufferUsage::TRANSFER_DST,
            MemoryTypeFilter::PREFER_HOST | MemoryTypeFilter::HOST_RANDOM_ACCESS,
        )?;
        cb.copy_buffer(CopyBufferInfo::buffers(src.clone(), host.clone())).map_err(api("recording a download"))?;
        Ok(host)
    }

    /// The device buffer of `slot`, at least `len` floats: one per context and slot, kept and
    /// reused by every later op (grown when one needs more). Reuse is safe even while earlier
    /// submissions that used it run: vulkano orders every access to it (barriers within a
    /// command buffer, the chained submissions across them). Without it a recording of many ops
    /// would hold a fresh workspace per op.
    pub(crate) fn scratch(&self, slot: Scratch, len: usize) -> Result<Subbuffer<[f32]>> {
        let mut slots = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = slots.get(&slot) {
            if b.len() >= len.max(1) as u64 {
                return Ok(b.clone().slice(0..len.max(1) as u64));
            }
        }
        let b = self.buffer(len, BufferUsage::STORAGE_BUFFER, MemoryTypeFilter::PREFER_DEVICE)?;
        slots.insert(slot, b.clone());
        Ok(b)
    }

    /// One pooled device float, bound where a shader's optional input (the bias) is absent.
    pub(crate) fn one(&self) -> Result<Subbuffer<[f32]>> {
        self.buffer(1, BufferUsage::STORAGE_BUFFER, MemoryTypeFilter::PREFER_DEVICE)
    }
}

/// `len` copies of `v`, or an out-of-memory error.
pub(crate) fn filled<T: Copy>(len: usize, v: T) -> Result<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|e| VkError::OutOfMemory(format!("{len} elements on the host: {e}").into()))?;
    out.resize(len, v);
    Ok(out)
}
