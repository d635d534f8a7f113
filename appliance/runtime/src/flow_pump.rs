//! The ring buffer → flow table loop, one for the capture task and `mldefender capture`.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use mld_capture::{boot_time_ns, boot_to_realtime_offset_ns, CaptureError, RingReader};
use mld_flow::{FlowRecord, FlowTable};
use mld_packet::PacketRecord;

/// The XDP program wakes the reader only when a batch is waiting; this bounds how long a
/// lone record waits.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(20);
/// Packet records taken from the ring per pump, at most.
const MAX_RECORDS_PER_PUMP: usize = 8192;

/// Packet records from the ring into the flow table; ended flows gather in `finished`.
#[derive(Debug)]
pub struct FlowPump {
    reader: RingReader,
    pub table: FlowTable,
    pub finished: Vec<FlowRecord>,
    /// CLOCK_BOOTTIME (the XDP program's clock) → wall clock, for the records' times.
    offset_ns: u64,
    tick: Duration,
    last_tick: Instant,
    /// Packet records read so far.
    pub records: u64,
}

impl FlowPump {
    /// `tick`: how often the table's clock is advanced to now, so idle flows end even
    /// when no packet arrives.
    pub fn new(reader: RingReader, table: FlowTable, tick: Duration) -> FlowPump {
        FlowPump { reader, table, finished: Vec::with_capacity(1024), offset_ns: boot_to_realtime_offset_ns(), tick, last_tick: Instant::now(), records: 0 }
    }

    /// Waits up to [`POLL_TIMEOUT`] (less when `wake` becomes readable) for packet
    /// records and puts them in the table; on the tick, advances its clock. Returns the
    /// records read.
    pub fn pump(&mut self, wake: Option<BorrowedFd<'_>>) -> Result<usize, CaptureError> {
        self.pump_observing(wake, |_, _| {})
    }

    /// Like [`FlowPump::pump`], and hands each record (in wall-clock time) to `observe`
    /// after the table took it, with whether it started a flow.
    pub fn pump_observing(&mut self, wake: Option<BorrowedFd<'_>>, mut observe: impl FnMut(&PacketRecord, bool)) -> Result<usize, CaptureError> {
        let (table, finished, offset_ns) = (&mut self.table, &mut self.finished, self.offset_ns);
        let read = self.reader.read_or_wake(POLL_TIMEOUT, MAX_RECORDS_PER_PUMP, wake, |mut record| {
            record.ts_ns += offset_ns;
            let created = table.flows_created();
            table.process(&record, finished);
            observe(&record, table.flows_created() > created);
        })?;
        self.records += read as u64;
        if self.last_tick.elapsed() >= self.tick {
            self.table.advance_to(boot_time_ns() + self.offset_ns, &mut self.finished);
            self.last_tick = Instant::now();
        }
        Ok(read)
    }

    /// At shutdown: what the ring still holds, then every flow ends.
    pub fn drain(&mut self) -> Result<(), CaptureError> {
        let (table, finished, offset_ns) = (&mut self.table, &mut self.finished, self.offset_ns);
        self.records += self.reader.read(Duration::ZERO, usize::MAX, |mut record| {
            record.ts_ns += offset_ns;
            table.process(&record, finished);
        })? as u64;
        self.table.flush(&mut self.finished);
        Ok(())
    }
}
