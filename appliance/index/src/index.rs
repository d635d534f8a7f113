//! `EventIndex`: the FAISS index, the side store and the snapshot, together.

use std::collections::HashMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use faiss::index::autotune::ParameterSpace;
use faiss::index::IndexImpl;
use faiss::{IdMap, Idx, Index, MetricType};

use crate::error::{IndexError, Result};
use crate::fields::{Hit, HitFields, SearchFilter};
use crate::manifest::{self, Manifest, FORMAT_VERSION, MANIFEST_FILE};
use crate::side_store::{SideStore, StoredEvent, FIELDS_FILE};

/// Exact L2 search: the embedder already reduces the features (PCA), so no reduction stage
/// is needed here. `"HNSW32"` is the approximate choice for large histories.
pub const DEFAULT_FACTORY: &str = "Flat";

/// The most candidates one query asks FAISS for when it over-fetches to apply a filter
/// (and the largest `k`). Bounds a query's time and memory whatever the filter.
pub const MAX_CANDIDATES: usize = 4096;

/// How many times `k` a filtered query fetches first; each further round multiplies it
/// again, up to [`MAX_CANDIDATES`].
const OVERFETCH_FACTOR: usize = 4;

/// Bytes the index takes, on disk and in memory, in total and per event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryReport {
    pub events: u64,
    /// The last snapshot's index file plus the side store.
    pub disk_bytes: u64,
    /// An estimate of the resident bytes: FAISS's serialized size (vectors, ids, graph)
    /// plus this crate's per-event table. Measure RSS for the real figure (the benchmark does).
    pub ram_bytes_estimate: u64,
}

impl MemoryReport {
    pub fn disk_bytes_per_event(&self) -> f64 {
        self.disk_bytes as f64 / self.events.max(1) as f64
    }

    pub fn ram_bytes_per_event(&self) -> f64 {
        self.ram_bytes_estimate as f64 / self.events.max(1) as f64
    }
}

/// A similarity index over events, in one directory (see the crate docs for the files).
///
/// Event ids are the FAISS ids. The side store keeps each event's [`HitFields`]; memory
/// holds only a small entry per event (where its fields are, its time, action and
/// category for filtering), so fields are read from the file for the final hits only.
///
/// One writer: `add` and `save` take `&mut self`. `search` takes `&self`; the FAISS index
/// sits behind a mutex because the bindings only search a generic index through `&mut`.
#[derive(Debug)]
pub struct EventIndex {
    dir: PathBuf,
    dims: u32,
    factory: String,
    index: Mutex<IdMap<IndexImpl>>,
    store: SideStore,
    entries: HashMap<u64, Entry>,
    labels: Labels,
    last_id: Option<u64>,
    generation: u64,
    index_file_bytes: u64,
    /// What made the vectors (see [`Manifest::source`]).
    source: String,
    /// Opened beside a running writer: `add` and `save` are refused.
    read_only: bool,
    /// Event ids by address (source and destination), in the order they were added.
    by_ip: HashMap<IpAddr, Vec<u64>>,
    /// Event ids by the first 8 bytes of their `event_id` (checked against the stored
    /// fields when looked up; the last event wins a shared prefix).
    by_event_id: HashMap<u64, u64>,
    /// A factory that must be trained (IVF, PQ) is trained once this many events are in;
    /// 0 for one that needs no training (Flat, HNSW).
    train_size: usize,
    /// Until then the events' vectors wait here (searched exactly, by brute force); their
    /// fields are in the side store already, with the vectors, so a reopen finds them.
    pending: Vec<(u64, Vec<f32>)>,
}

/// Per event, in memory: where its fields are, and what filters look at.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    ts_us: i64,
    action: u16,
    category: u16,
}

/// Interned action and category strings (a handful of distinct values).
#[derive(Debug, Default)]
struct Labels {
    names: Vec<String>,
    codes: HashMap<String, u16>,
}

impl EventIndex {
    /// Creates an empty index in `dir` (created if needed) from an index-factory string
    /// (`"Flat"`, `"HNSW32"`, ...; it is wrapped in an ID map), and saves it at once so
    /// that `open` works from the start. A directory that already has a manifest is
    /// refused; other files of ours left without a manifest are not an index and are removed.
    pub fn create(dir: impl AsRef<Path>, dims: u32, factory: &str) -> Result<EventIndex> {
        EventIndex::create_with_source(dir, dims, factory, "")
    }

    /// [`EventIndex::create`], recording what makes the vectors (for example the embedder's
    /// name and SHA-256) in the manifest, so that a reader can refuse vectors of another.
    pub fn create_with_source(dir: impl AsRef<Path>, dims: u32, factory: &str, source: &str) -> Result<EventIndex> {
        let dir = dir.as_ref().to_path_buf();
        if dims == 0 {
            return Err(IndexError::invalid("dimensions must be at least 1"));
        }
        if factory.trim().is_empty() || factory.contains("IDMap") {
            return Err(IndexError::invalid(format!("index factory `{factory}`: give the index without an IDMap (ids are always mapped)")));
        }
        fs::create_dir_all(&dir).map_err(|err| IndexError::io("create directory", &dir, err))?;
        if dir.join(MANIFEST_FILE).exists() {
            return Err(IndexError::AlreadyExists { path: dir });
        }
        remove_our_files(&dir, None)?;
        let inner = faiss::index_factory(dims, factory, MetricType::L2).map_err(|err| IndexError::faiss(format!("build index `{factory}`"), err))?;
        let train_size = if inner.is_trained() { 0 } else { training_size(factory) };
        let index = IdMap::new(inner).map_err(|err| IndexError::faiss("wrap index in an ID map", err))?;
        let store = SideStore::create(&dir)?;
        let mut event_index = EventIndex {
            dir,
            dims,
            factory: factory.to_owned(),
            index: Mutex::new(index),
            store,
            entries: HashMap::new(),
            labels: Labels::default(),
            last_id: None,
            generation: 0,
            index_file_bytes: 0,
            source: source.to_owned(),
            read_only: false,
            by_ip: HashMap::new(),
            by_event_id: HashMap::new(),
            train_size,
            pending: Vec::new(),
        };
        event_index.save()?;
        Ok(event_index)
    }

    /// Opens the last snapshot in `dir`. Refuses, naming the file and the reason, a missing
    /// or corrupt manifest, index file or side store, and any disagreement between them
    /// (the caller rebuilds from the log: see [`EventIndex::rebuild_from`]). Side-store
    /// records written after the snapshot (and a torn last record) are dropped: their
    /// vectors were not saved, so the caller re-adds everything after [`EventIndex::last_id`].
    pub fn open(dir: impl AsRef<Path>) -> Result<EventIndex> {
        EventIndex::open_with(dir.as_ref(), false)
    }

    /// Opens the last snapshot for queries only, beside a writer that may be running:
    /// nothing in the directory is changed, records after the snapshot are ignored, and
    /// `add` and `save` are refused.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<EventIndex> {
        EventIndex::open_with(dir.as_ref(), true)
    }

    fn open_with(dir: &Path, read_only: bool) -> Result<EventIndex> {
        let dir = dir.to_path_buf();
        let manifest = Manifest::load(&dir)?;
        let index_path = manifest.verify_index_file(&dir)?;
        let index_path_str = utf8_path(&index_path)?;
        let index = faiss::read_index(index_path_str)
            .map_err(|err| IndexError::corrupt(&index_path, format!("faiss cannot read it: {err}")))?
            .into_id_map()
            .map_err(|_| IndexError::corrupt(&index_path, "not an ID-mapped index"))?;
        if index.d() != manifest.dims {
            return Err(IndexError::corrupt(&index_path, format!("{} dimensions, the manifest records {}", index.d(), manifest.dims)));
        }
        // An index still waiting for its training holds no vectors: they are all pending.
        let trained = index.is_trained();
        let expected = if trained { manifest.count } else { 0 };
        if index.ntotal() != expected {
            return Err(IndexError::corrupt(&index_path, format!("{} vectors, the manifest records {expected}", index.ntotal())));
        }
        let fields_path = dir.join(FIELDS_FILE);
        let mut labels = Labels::default();
        // The manifest is parsed but not trusted for an allocation: no more records than
        // the committed side store can hold.
        let most_records = manifest.fields_bytes / crate::side_store::MIN_RECORD_BYTES;
        let capacity = usize::try_from(manifest.count.min(most_records)).unwrap_or(0);
        let mut entries = HashMap::with_capacity(capacity);
        let mut by_ip: HashMap<IpAddr, Vec<u64>> = HashMap::new();
        let mut by_event_id = HashMap::with_capacity(capacity);
        // A record at a time: the fields are read, noted and dropped (the side store can be
        // far larger than the memory the index keeps).
        let store = SideStore::open(&dir, manifest.fields_bytes, read_only, &mut |record| {
            note_lookups(&mut by_ip, &mut by_event_id, record.id, &record.fields);
            let entry = Entry {
                offset: record.offset,
                ts_us: record.fields.ts_us,
                action: labels.intern(&record.fields.action),
                category: labels.intern(&record.fields.category),
            };
            if entries.insert(record.id, entry).is_some() {
                return Err(IndexError::corrupt(&fields_path, format!("event {} appears twice", record.id)));
            }
            Ok(())
        })?;
        if entries.len() as u64 != manifest.count {
            return Err(IndexError::corrupt(&fields_path, format!("{} committed records, the manifest records {} events", entries.len(), manifest.count)));
        }
        // faiss-rs builds the id slice from FAISS's pointer, which is null while the
        // index is empty (a debug build aborts on that): only look when there are ids.
        let id_map: &[Idx] = if index.ntotal() == 0 { &[] } else { index.id_map() };
        for id in id_map {
            let known = id.get().is_some_and(|id| entries.contains_key(&id));
            if !known {
                return Err(IndexError::corrupt(&index_path, format!("id {id} has no fields in {}", fields_path.display())));
            }
        }
        let mut pending = Vec::new();
        if !trained {
            let mut ids: Vec<u64> = entries.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                let stored = store.read_event(entries[&id].offset)?;
                if stored.vector.len() != manifest.dims as usize {
                    return Err(IndexError::corrupt(&fields_path, format!("event {id} has a vector of {} values, not {}", stored.vector.len(), manifest.dims)));
                }
                pending.push((id, stored.vector));
            }
        }
        let train_size = if trained { 0 } else { training_size(&manifest.factory) };
        let last_id = entries.keys().copied().max();
        if last_id != manifest.last_id {
            return Err(IndexError::corrupt(dir.join(MANIFEST_FILE), format!("last id {:?}, the snapshot's is {last_id:?}", manifest.last_id)));
        }
        Ok(EventIndex {
            dir,
            dims: manifest.dims,
            factory: manifest.factory,
            index: Mutex::new(index),
            store,
            entries,
            labels,
            last_id,
            generation: manifest.generation,
            index_file_bytes: manifest.index_bytes,
            train_size,
            source: manifest.source,
            read_only,
            by_ip,
            by_event_id,
            pending,
        })
    }

    /// Builds a fresh index in `dir` from `(id, vector, fields)` items (for example the
    /// verified log, re-embedded), replacing whatever snapshot was there, then saves it.
    /// Items are added in batches of `batch` (at least 1).
    pub fn rebuild_from<I>(dir: impl AsRef<Path>, dims: u32, factory: &str, items: I, batch: usize) -> Result<EventIndex>
    where
        I: IntoIterator<Item = (u64, Vec<f32>, HitFields)>,
    {
        let dir = dir.as_ref();
        match fs::remove_file(dir.join(MANIFEST_FILE)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(IndexError::io("remove", dir.join(MANIFEST_FILE), err)),
        }
        let mut index = EventIndex::create(dir, dims, factory)?;
        let batch = batch.max(1);
        let mut ids = Vec::with_capacity(batch);
        let mut vectors = Vec::with_capacity(batch * dims as usize);
        let mut fields = Vec::with_capacity(batch);
        for (id, vector, hit_fields) in items {
            ids.push(id);
            vectors.extend_from_slice(&vector);
            fields.push(hit_fields);
            if ids.len() == batch {
                index.add(&ids, &vectors, &fields)?;
                ids.clear();
                vectors.clear();
                fields.clear();
            }
        }
        if !ids.is_empty() {
            index.add(&ids, &vectors, &fields)?;
        }
        index.save()?;
        Ok(index)
    }

    /// Adds a batch: `ids[i]` has the vector `vectors[i*dims..(i+1)*dims]` and `fields[i]`.
    /// Ids already in the index (and repeats within the batch) are skipped, so re-adding
    /// after a restart is harmless; returns how many were added. A factory that needs
    /// training (IVF, PQ) is trained once enough events are in (40 per IVF list, or 10,000):
    /// until then the vectors wait in memory and are searched exactly. Everything is
    /// checked before anything is written. The fields are appended to the side store at once; both become durable at
    /// the next [`EventIndex::save`].
    pub fn add(&mut self, ids: &[u64], vectors: &[f32], fields: &[HitFields]) -> Result<usize> {
        self.refuse_if_read_only("add")?;
        let dims = self.dims as usize;
        if vectors.len() != ids.len() * dims || fields.len() != ids.len() {
            return Err(IndexError::invalid(format!("{} ids, {} floats ({dims} per vector), {} fields", ids.len(), vectors.len(), fields.len())));
        }
        if let Some(at) = vectors.iter().position(|value| !value.is_finite()) {
            return Err(IndexError::invalid(format!("vector of event {} is not finite", ids[at / dims])));
        }
        if ids.iter().any(|&id| id > i64::MAX as u64) {
            return Err(IndexError::invalid("an id does not fit FAISS's signed 64-bit ids"));
        }
        let mut seen = std::collections::HashSet::new();
        let mut new_ids = Vec::with_capacity(ids.len());
        let mut new_vectors = Vec::with_capacity(vectors.len());
        let mut encoded = Vec::new();
        let mut pending = Vec::with_capacity(ids.len());
        for (i, (&id, hit_fields)) in ids.iter().zip(fields).enumerate() {
            if self.entries.contains_key(&id) || !seen.insert(id) {
                continue;
            }
            let offset_in_batch = encoded.len() as u64;
            SideStore::encode(id, &vectors[i * dims..(i + 1) * dims], hit_fields, &mut encoded)?;
            new_ids.push(Idx::new(id));
            new_vectors.extend_from_slice(&vectors[i * dims..(i + 1) * dims]);
            pending.push((id, offset_in_batch, hit_fields));
        }
        if new_ids.is_empty() {
            return Ok(0);
        }
        if self.train_size == 0 {
            self.lock_index().add_with_ids(&new_vectors, &new_ids).map_err(|err| IndexError::faiss("add vectors", err))?;
        } else {
            for (id, vector) in new_ids.iter().zip(new_vectors.chunks(dims)) {
                self.pending.push((id.get().unwrap_or_default(), vector.to_vec()));
            }
            if self.pending.len() >= self.train_size {
                self.train_on_pending()?;
            }
        }
        let start = self.store.append(&encoded)?;
        for (id, offset_in_batch, hit_fields) in pending {
            let entry = Entry {
                offset: start + offset_in_batch,
                ts_us: hit_fields.ts_us,
                action: self.labels.intern(&hit_fields.action),
                category: self.labels.intern(&hit_fields.category),
            };
            self.entries.insert(id, entry);
            note_lookups(&mut self.by_ip, &mut self.by_event_id, id, hit_fields);
            self.last_id = Some(self.last_id.map_or(id, |last| last.max(id)));
        }
        Ok(new_ids.len())
    }

    /// The `k` (at most [`MAX_CANDIDATES`]) nearest events to `vector` that pass `filter`,
    /// nearest first; `distance` is the squared L2 distance.
    ///
    /// Filters are applied to FAISS's answers: a filtered query asks for `4k` candidates,
    /// then `16k`, ... until it has `k` hits, has seen every event, or has asked for
    /// [`MAX_CANDIDATES`]. So a filter that keeps fewer than about 1 event in
    /// `MAX_CANDIDATES / k` may return fewer than `k` hits although more exist farther away;
    /// narrow the time range in the caller if that matters.
    pub fn search(&self, vector: &[f32], k: usize, filter: &SearchFilter) -> Result<Vec<Hit>> {
        if vector.len() != self.dims as usize {
            return Err(IndexError::invalid(format!("query has {} values, the index {} dimensions", vector.len(), self.dims)));
        }
        let total = self.entries.len();
        let k = k.min(MAX_CANDIDATES);
        if k == 0 || total == 0 {
            return Ok(Vec::new());
        }
        let filter = self.compile(filter);
        if self.train_size > 0 {
            return self.search_pending(vector, k, filter.as_ref());
        }
        let mut fetch = if filter.is_none() { k } else { k * OVERFETCH_FACTOR };
        fetch = fetch.min(MAX_CANDIDATES).min(total);
        let mut chosen: Vec<(u64, f32, u64)> = Vec::with_capacity(k);
        loop {
            let result = self.lock_index().search(vector, fetch).map_err(|err| IndexError::faiss("search", err))?;
            chosen.clear();
            for (label, &distance) in result.labels.iter().zip(&result.distances) {
                let Some(id) = label.get() else { continue };
                let Some(entry) = self.entries.get(&id) else {
                    continue;
                };
                if filter.as_ref().is_none_or(|filter| filter.keeps(entry)) {
                    chosen.push((id, distance, entry.offset));
                    if chosen.len() == k {
                        break;
                    }
                }
            }
            if chosen.len() == k || fetch >= total || fetch >= MAX_CANDIDATES {
                break;
            }
            fetch = (fetch * OVERFETCH_FACTOR).min(MAX_CANDIDATES).min(total);
        }
        chosen.into_iter().map(|(id, distance, offset)| Ok(Hit { id, distance, fields: self.store.read(offset)? })).collect()
    }

    /// Writes a snapshot atomically: the side store is fsynced, the index goes to a new
    /// file (temp, fsync, rename), then the manifest (temp, fsync, rename, fsync the
    /// directory) commits it; the previous index file is removed after. A crash at any
    /// point leaves the previous snapshot or the new one, both valid.
    pub fn save(&mut self) -> Result<()> {
        self.refuse_if_read_only("save")?;
        self.store.sync()?;
        let generation = self.generation + 1;
        let index_file = format!("index.{generation}.faiss");
        let final_path = self.dir.join(&index_file);
        let temp_path = self.dir.join(format!("{index_file}.tmp"));
        {
            let index = self.lock_index();
            faiss::write_index(&*index, utf8_path(&temp_path)?).map_err(|err| IndexError::faiss(format!("write `{}`", temp_path.display()), err))?;
        }
        manifest::sync_file(&temp_path)?;
        fs::rename(&temp_path, &final_path).map_err(|err| IndexError::io("rename into", &final_path, err))?;
        manifest::sync_dir(&self.dir)?;
        let (index_bytes, index_sha256) = manifest::file_sha256(&final_path)?;
        let manifest = Manifest {
            format: FORMAT_VERSION,
            dims: self.dims,
            factory: self.factory.clone(),
            count: self.entries.len() as u64,
            last_id: self.last_id,
            generation,
            index_file: index_file.clone(),
            index_bytes,
            index_sha256,
            fields_bytes: self.store.len_bytes(),
            source: self.source.clone(),
        };
        manifest.store(&self.dir)?;
        self.generation = generation;
        self.index_file_bytes = index_bytes;
        remove_our_files(&self.dir, Some(&index_file))?;
        Ok(())
    }

    /// Sets a FAISS search parameter by name, for example `efSearch` for HNSW (FAISS's
    /// `ParameterSpace`; it reaches through the ID map). HNSW's `efSearch` is saved with
    /// the index.
    pub fn set_search_parameter(&mut self, name: &str, value: f64) -> Result<()> {
        let space = ParameterSpace::new().map_err(|err| IndexError::faiss("create a parameter space", err))?;
        let index = self.lock_index();
        space.set_index_parameter(&*index, name, value).map_err(|err| IndexError::faiss(format!("set `{name}` = {value}"), err))
    }

    /// Events in the index (saved or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The largest event id added; after `open`, the last one saved.
    pub fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    pub fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    /// The stored fields and vector of event `id`, if it is in the index.
    pub fn get(&self, id: u64) -> Result<Option<StoredEvent>> {
        match self.entries.get(&id) {
            Some(entry) => self.store.read_event(entry.offset).map(Some),
            None => Ok(None),
        }
    }

    /// The id (seq) of the event whose `event_id` is `event_id`, if it is in the index.
    pub fn find_event_id(&self, event_id: &str) -> Result<Option<u64>> {
        let Some(key) = event_id_key(event_id) else { return Ok(None) };
        let Some(&id) = self.by_event_id.get(&key) else { return Ok(None) };
        let fields = self.get(id)?.map(|event| event.fields);
        Ok(fields.filter(|fields| fields.event_id == event_id).map(|_| id))
    }

    /// The newest `limit` events (by id, newest first) with `ip` as source or destination
    /// that pass `filter`, with their fields.
    pub fn events_with_ip(&self, ip: IpAddr, filter: &SearchFilter, limit: usize) -> Result<Vec<HitFields>> {
        self.newest_of(self.ids_with_ip(ip), filter, |_| true, limit)
    }

    /// The ids of the events with `ip` as source or destination, ascending.
    pub fn ids_with_ip(&self, ip: IpAddr) -> &[u64] {
        // Kept in ascending order (see `note_lookups`).
        self.by_ip.get(&ip).map_or(&[], Vec::as_slice)
    }

    /// The newest `limit` (at most [`MAX_CANDIDATES`]) of `ids` (ascending) that are in the
    /// index, pass `filter` and `also`, newest first, with their fields. Fields are read for
    /// those returned only.
    pub fn newest_of(&self, ids: &[u64], filter: &SearchFilter, also: impl Fn(u64) -> bool, limit: usize) -> Result<Vec<HitFields>> {
        let compiled = self.compile(filter);
        let limit = limit.min(MAX_CANDIDATES);
        let mut found = Vec::new();
        for &id in ids.iter().rev() {
            if found.len() == limit {
                break;
            }
            let Some(entry) = self.entries.get(&id) else { continue };
            if compiled.as_ref().is_none_or(|filter| filter.keeps(entry)) && also(id) {
                found.push(self.store.read(entry.offset)?);
            }
        }
        Ok(found)
    }

    /// Reads back every event this index holds, ascending by id, in batches of at most
    /// `batch`, through the side store it has open (a writer beside a read-only index may
    /// rename or replace the directory meanwhile: the open file is still this snapshot's).
    pub fn read_all(&self, batch: usize, on_batch: &mut BatchSink<'_>) -> Result<()> {
        let locations = self.locations_from(0);
        for chunk in locations.chunks(batch.max(1)) {
            let mut ids = Vec::with_capacity(chunk.len());
            let mut vectors = Vec::with_capacity(chunk.len() * self.dims as usize);
            let mut fields = Vec::with_capacity(chunk.len());
            for (id, offset) in chunk {
                let stored = self.store.read_event(*offset)?;
                if stored.fields.seq != *id || stored.vector.len() != self.dims as usize {
                    return Err(IndexError::corrupt(
                        self.dir.join(FIELDS_FILE),
                        format!("the record at byte {offset} is event {} with {} values, not event {id}", stored.fields.seq, stored.vector.len()),
                    ));
                }
                ids.push(*id);
                vectors.extend_from_slice(&stored.vector);
                fields.push(stored.fields);
            }
            on_batch(&ids, &vectors, &fields)?;
        }
        Ok(())
    }

    /// The id such that exactly `n` events have this id or a larger one (the `n`-th newest),
    /// if there are that many.
    pub fn nth_newest_id(&self, n: usize) -> Option<u64> {
        if n == 0 || n > self.entries.len() {
            return None;
        }
        let mut ids: Vec<u64> = self.entries.keys().copied().collect();
        let (_, nth, _) = ids.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
        Some(*nth)
    }

    /// Where each event with an id at or above `min_id` is in the side store, by id: what
    /// [`read_stored_events`] reads back (to build a smaller index from this one).
    pub fn locations_from(&self, min_id: u64) -> Vec<(u64, u64)> {
        let mut kept: Vec<(u64, u64)> = self.entries.iter().filter(|(id, _)| **id >= min_id).map(|(id, entry)| (*id, entry.offset)).collect();
        kept.sort_unstable();
        kept
    }

    /// The directory was renamed to `dir` (by the caller, while this index was open): saves
    /// go there from now on.
    pub fn moved_to(&mut self, dir: impl AsRef<Path>) {
        self.dir = dir.as_ref().to_path_buf();
        self.store.moved_to(&self.dir);
    }

    /// Bytes of the FAISS file of the last save (a save writes it whole).
    pub fn index_file_bytes(&self) -> u64 {
        self.index_file_bytes
    }

    /// What made the vectors, as recorded at creation.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn dims(&self) -> u32 {
        self.dims
    }

    pub fn factory(&self) -> &str {
        &self.factory
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk (as of the last save, plus the side store) and in memory.
    pub fn memory_report(&self) -> MemoryReport {
        // A hashbrown slot is key + value + 1 control byte; at the usual load factor a
        // table has about 8/7 slots per entry.
        let slot = std::mem::size_of::<u64>() + std::mem::size_of::<Entry>() + 1;
        let event_id_slot = 2 * std::mem::size_of::<u64>() + 1;
        let ip_slot = std::mem::size_of::<IpAddr>() + std::mem::size_of::<Vec<u64>>() + 1;
        let ip_ids: usize = self.by_ip.values().map(Vec::capacity).sum();
        let table = (self.entries.capacity() * slot
            + self.by_event_id.capacity() * event_id_slot
            + self.by_ip.capacity() * ip_slot
            + ip_ids * std::mem::size_of::<u64>()) as u64;
        MemoryReport {
            events: self.entries.len() as u64,
            disk_bytes: self.index_file_bytes + self.store.len_bytes(),
            ram_bytes_estimate: self.index_file_bytes + table,
        }
    }

    /// Trains the factory on the pending vectors, then adds them with their ids.
    fn train_on_pending(&mut self) -> Result<()> {
        let dims = self.dims as usize;
        let mut vectors = Vec::with_capacity(self.pending.len() * dims);
        let mut ids = Vec::with_capacity(self.pending.len());
        for (id, vector) in &self.pending {
            vectors.extend_from_slice(vector);
            ids.push(Idx::new(*id));
        }
        {
            let mut index = self.lock_index();
            index.train(&vectors).map_err(|err| IndexError::faiss(format!("train `{}` on {} events", self.factory, ids.len()), err))?;
            index.add_with_ids(&vectors, &ids).map_err(|err| IndexError::faiss("add vectors", err))?;
        }
        self.pending = Vec::new();
        self.train_size = 0;
        Ok(())
    }

    /// Exact search over the vectors waiting for training.
    fn search_pending(&self, vector: &[f32], k: usize, filter: Option<&CompiledFilter>) -> Result<Vec<Hit>> {
        let mut scored: Vec<(f32, u64, u64)> = self
            .pending
            .iter()
            .filter_map(|(id, stored)| {
                let entry = self.entries.get(id)?;
                if !filter.is_none_or(|filter| filter.keeps(entry)) {
                    return None;
                }
                let distance = stored.iter().zip(vector).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
                Some((distance, *id, entry.offset))
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(distance, id, offset)| Ok(Hit { id, distance, fields: self.store.read(offset)? })).collect()
    }

    fn refuse_if_read_only(&self, operation: &str) -> Result<()> {
        if self.read_only {
            return Err(IndexError::invalid(format!("cannot {operation}: index `{}` was opened read-only", self.dir.display())));
        }
        Ok(())
    }

    fn lock_index(&self) -> MutexGuard<'_, IdMap<IndexImpl>> {
        // A panic while holding the lock cannot leave FAISS half-updated from Rust's side.
        self.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn compile(&self, filter: &SearchFilter) -> Option<CompiledFilter> {
        if filter.is_empty() {
            return None;
        }
        let codes = |names: &[String]| -> Option<Vec<u16>> {
            (!names.is_empty()).then(|| names.iter().filter_map(|name| self.labels.codes.get(name).copied()).collect())
        };
        Some(CompiledFilter {
            from_ts_us: filter.from_ts_us,
            to_ts_us: filter.to_ts_us,
            actions: codes(&filter.actions),
            categories: codes(&filter.categories),
        })
    }
}

/// A filter with its strings replaced by the interned codes (a name never seen matches nothing).
struct CompiledFilter {
    from_ts_us: Option<i64>,
    to_ts_us: Option<i64>,
    actions: Option<Vec<u16>>,
    categories: Option<Vec<u16>>,
}

impl CompiledFilter {
    fn keeps(&self, entry: &Entry) -> bool {
        self.from_ts_us.is_none_or(|from| entry.ts_us >= from)
            && self.to_ts_us.is_none_or(|to| entry.ts_us < to)
            && self.actions.as_ref().is_none_or(|codes| codes.contains(&entry.action))
            && self.categories.as_ref().is_none_or(|codes| codes.contains(&entry.category))
    }
}

impl Labels {
    fn intern(&mut self, name: &str) -> u16 {
        if let Some(&code) = self.codes.get(name) {
            return code;
        }
        // More distinct names than codes is not expected (actions and categories are a
        // handful); they then share the last code, which only makes filters looser.
        let code = u16::try_from(self.names.len()).unwrap_or(u16::MAX);
        if code < u16::MAX {
            self.names.push(name.to_owned());
            self.codes.insert(name.to_owned(), code);
        }
        code
    }
}

/// Takes a batch of events: ids, their vectors (row-major) and fields.
pub type BatchSink<'a> = dyn FnMut(&[u64], &[f32], &[HitFields]) -> Result<()> + 'a;

/// Reads back the events at `locations` (from [`EventIndex::locations_from`]) from the
/// side store in `dir`, without opening the index, in batches of at most `batch`.
pub fn read_stored_events(dir: impl AsRef<Path>, locations: &[(u64, u64)], batch: usize, on_batch: &mut BatchSink<'_>) -> Result<()> {
    let store = SideStore::open_for_reading(dir.as_ref())?;
    for chunk in locations.chunks(batch.max(1)) {
        let mut ids = Vec::with_capacity(chunk.len());
        let mut vectors = Vec::new();
        let mut fields = Vec::with_capacity(chunk.len());
        for (id, offset) in chunk {
            let stored = store.read_event(*offset)?;
            ids.push(*id);
            vectors.extend_from_slice(&stored.vector);
            fields.push(stored.fields);
        }
        on_batch(&ids, &vectors, &fields)?;
    }
    Ok(())
}

/// How many events a factory that needs training waits for: 40 per list of an IVF index
/// (FAISS asks for at least 39 per centroid), else 10,000.
fn training_size(factory: &str) -> usize {
    factory
        .split(',')
        .find_map(|part| part.strip_prefix("IVF"))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<usize>().ok())
        .map_or(10_000, |lists| lists.saturating_mul(40).max(1))
}

/// The lookup key of an `event_id` (`ev-` and hex): its first 8 bytes.
fn event_id_key(event_id: &str) -> Option<u64> {
    let hex = event_id.strip_prefix("ev-").unwrap_or(event_id);
    u64::from_str_radix(hex.get(..16)?, 16).ok()
}

/// Records an event in the by-address and by-event-id lookups.
fn note_lookups(by_ip: &mut HashMap<IpAddr, Vec<u64>>, by_event_id: &mut HashMap<u64, u64>, id: u64, fields: &HitFields) {
    for address in [&fields.src_ip, &fields.dst_ip] {
        if let Ok(ip) = address.parse::<IpAddr>() {
            // Ascending and unique (events come in seq order; an earlier id is placed).
            let ids = by_ip.entry(ip).or_default();
            match ids.last() {
                Some(&last) if last >= id => {
                    if let Err(at) = ids.binary_search(&id) {
                        ids.insert(at, id);
                    }
                }
                _ => ids.push(id),
            }
        }
    }
    if let Some(key) = event_id_key(&fields.event_id) {
        by_event_id.insert(key, id);
    }
}

/// Removes index files other than `keep`, leftover temp files and, when `keep` is `None`
/// (creating), the side store.
fn remove_our_files(dir: &Path, keep: Option<&str>) -> Result<()> {
    let listing = fs::read_dir(dir).map_err(|err| IndexError::io("list", dir, err))?;
    for entry in listing {
        let entry = entry.map_err(|err| IndexError::io("list", dir, err))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_index = name.starts_with("index.") && (name.ends_with(".faiss") || name.ends_with(".faiss.tmp"));
        let ours = is_index || name == format!("{MANIFEST_FILE}.tmp") || (keep.is_none() && name == FIELDS_FILE);
        if ours && Some(name) != keep {
            let path = entry.path();
            fs::remove_file(&path).map_err(|err| IndexError::io("remove", &path, err))?;
        }
    }
    Ok(())
}

fn utf8_path(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| IndexError::invalid(format!("path `{}` is not UTF-8 (FAISS needs it)", path.display())))
}
