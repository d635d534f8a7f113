//! Behaviour of an index directory: exact answers, filters, snapshots, refusal of damaged
//! files, torn side-store records, and the approximate (HNSW) setting's recall.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use mld_index::{EventIndex, HitFields, IndexError, SearchFilter, FIELDS_FILE, MANIFEST_FILE};

const DIMS: usize = 16;
const ACTIONS: [&str; 3] = ["allow", "block", "would-block"];
const CATEGORIES: [&str; 4] = ["benign", "scan", "flood", "brute-force"];

/// A small deterministic generator (xorshift64*), so the tests need no extra crate.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn vectors(&mut self, n: usize) -> Vec<f32> {
        (0..n * DIMS).map(|_| self.unit()).collect()
    }
}

fn fields_for(id: u64) -> HitFields {
    HitFields {
        seq: id,
        event_id: format!("evt-{id:08}"),
        ts_us: 1_700_000_000_000_000 + id as i64 * 1_000_000,
        src_ip: format!("10.0.{}.{}", id / 250 % 250, id % 250),
        dst_ip: "192.0.2.10".to_owned(),
        dst_port: (id % 1024) as u16,
        protocol: if id % 2 == 0 { "tcp" } else { "udp" }.to_owned(),
        action: ACTIONS[id as usize % ACTIONS.len()].to_owned(),
        category: CATEGORIES[id as usize % CATEGORIES.len()].to_owned(),
        score_fast: (id % 100) as f64 / 100.0,
        score_model: (id % 3 != 0).then_some(0.5),
        score_final: (id % 10) as f64 / 10.0,
        description: None,
    }
}

/// Ids 1000, 1003, 1006, ...: not 0..n, so that a mix-up with FAISS's positions shows.
fn ids(n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| 1000 + 3 * i).collect()
}

fn filled(dir: &Path, factory: &str, n: usize, seed: u64) -> (EventIndex, Vec<u64>, Vec<f32>) {
    let mut index = EventIndex::create(dir, DIMS as u32, factory).expect("create");
    let ids = ids(n);
    let vectors = Rng(seed).vectors(n);
    let fields: Vec<HitFields> = ids.iter().map(|&id| fields_for(id)).collect();
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let added = index.add(&ids[start..end], &vectors[start * DIMS..end * DIMS], &fields[start..end]).expect("add");
        assert_eq!(added, end - start);
    }
    (index, ids, vectors)
}

/// The `k` nearest (squared L2) among the events the filter keeps, by brute force.
fn brute_force(ids: &[u64], vectors: &[f32], query: &[f32], k: usize, keep: impl Fn(&HitFields) -> bool) -> Vec<(u64, f32)> {
    let mut all: Vec<(u64, f32)> = ids
        .iter()
        .enumerate()
        .filter(|(_, &id)| keep(&fields_for(id)))
        .map(|(i, &id)| {
            let row = &vectors[i * DIMS..(i + 1) * DIMS];
            (id, row.iter().zip(query).map(|(a, b)| (a - b) * (a - b)).sum())
        })
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1));
    all.truncate(k);
    all
}

fn assert_same_as_brute_force(hits: &[mld_index::Hit], expected: &[(u64, f32)]) {
    let got: Vec<u64> = hits.iter().map(|hit| hit.id).collect();
    let want: Vec<u64> = expected.iter().map(|(id, _)| *id).collect();
    assert_eq!(got, want, "ids in order");
    for (hit, (_, distance)) in hits.iter().zip(expected) {
        assert!((hit.distance - distance).abs() <= 1e-4 * distance.max(1.0), "{} vs {distance}", hit.distance);
        assert_eq!(hit.fields, fields_for(hit.id), "fields of event {}", hit.id);
    }
}

#[test]
fn flat_search_returns_the_exact_nearest_neighbours_in_order_with_their_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, ids, vectors) = filled(dir.path(), "Flat", 3000, 7);
    assert_eq!(index.len(), 3000);
    let queries = Rng(99).vectors(25);
    for query in queries.chunks(DIMS) {
        let hits = index.search(query, 10, &SearchFilter::default()).expect("search");
        assert_same_as_brute_force(&hits, &brute_force(&ids, &vectors, query, 10, |_| true));
    }
    // A stored vector's nearest neighbour is itself, at distance 0.
    let hits = index.search(&vectors[42 * DIMS..43 * DIMS], 1, &SearchFilter::default()).expect("search");
    assert_eq!(hits[0].id, ids[42]);
    assert_eq!(hits[0].distance, 0.0);
}

#[test]
fn filters_keep_only_matching_events_and_still_return_the_nearest_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (index, ids, vectors) = filled(dir.path(), "Flat", 3000, 11);
    let start = fields_for(ids[1000]).ts_us;
    let end = fields_for(ids[2000]).ts_us;
    type Keep = Box<dyn Fn(&HitFields) -> bool>;
    let filters: Vec<(SearchFilter, Keep)> = vec![
        (
            SearchFilter { from_ts_us: Some(start), to_ts_us: Some(end), ..SearchFilter::default() },
            Box::new(move |f: &HitFields| f.ts_us >= start && f.ts_us < end),
        ),
        (SearchFilter { actions: vec!["block".into()], ..SearchFilter::default() }, Box::new(|f: &HitFields| f.action == "block")),
        (
            SearchFilter { categories: vec!["scan".into(), "flood".into()], ..SearchFilter::default() },
            Box::new(|f: &HitFields| f.category == "scan" || f.category == "flood"),
        ),
        (
            SearchFilter { from_ts_us: Some(start), actions: vec!["would-block".into()], categories: vec!["brute-force".into()], ..SearchFilter::default() },
            Box::new(move |f: &HitFields| f.ts_us >= start && f.action == "would-block" && f.category == "brute-force"),
        ),
    ];
    let queries = Rng(5).vectors(10);
    for (filter, keep) in &filters {
        for query in queries.chunks(DIMS) {
            let hits = index.search(query, 10, filter).expect("search");
            assert_same_as_brute_force(&hits, &brute_force(&ids, &vectors, query, 10, keep));
        }
    }
    // A name never indexed matches nothing.
    let none = SearchFilter { categories: vec!["no-such".into()], ..SearchFilter::default() };
    assert!(index.search(&queries[..DIMS], 10, &none).expect("search").is_empty());
}

#[test]
fn a_saved_index_opens_and_answers_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, ids, _) = filled(dir.path(), "Flat", 2000, 3);
    index.save().expect("save");
    let queries = Rng(8).vectors(10);
    let filter = SearchFilter { actions: vec!["block".into()], ..SearchFilter::default() };
    let before: Vec<_> = queries.chunks(DIMS).map(|q| index.search(q, 10, &filter).expect("search")).collect();
    drop(index);

    let reopened = EventIndex::open(dir.path()).expect("open");
    assert_eq!(reopened.len(), 2000);
    assert_eq!(reopened.last_id(), ids.last().copied());
    assert_eq!(reopened.factory(), "Flat");
    let after: Vec<_> = queries.chunks(DIMS).map(|q| reopened.search(q, 10, &filter).expect("search")).collect();
    assert_eq!(before, after);
    // One index file: the previous generation was removed.
    let index_files =
        fs::read_dir(dir.path()).expect("list").filter(|entry| entry.as_ref().expect("entry").file_name().to_string_lossy().ends_with(".faiss")).count();
    assert_eq!(index_files, 1);
}

#[test]
fn open_refuses_a_corrupt_or_missing_index_file_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, _, _) = filled(dir.path(), "Flat", 500, 4);
    index.save().expect("save");
    drop(index);
    let index_file = fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|ext| ext == "faiss"))
        .expect("an index file");

    let original = fs::read(&index_file).expect("read");
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    fs::write(&index_file, &flipped).expect("write");
    let err = EventIndex::open(dir.path()).expect_err("a flipped byte is refused");
    assert!(matches!(&err, IndexError::Corrupt { path, .. } if *path == index_file), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&index_file.display().to_string()) && message.contains("SHA-256"), "{message}");

    fs::write(&index_file, &original).expect("restore");
    EventIndex::open(dir.path()).expect("the restored file opens");

    fs::remove_file(&index_file).expect("remove");
    let err = EventIndex::open(dir.path()).expect_err("a missing file is refused");
    assert!(matches!(&err, IndexError::Missing { path } if *path == index_file), "{err:?}");

    fs::remove_file(dir.path().join(MANIFEST_FILE)).expect("remove manifest");
    let err = EventIndex::open(dir.path()).expect_err("no manifest is refused");
    assert!(matches!(err, IndexError::Missing { .. }), "{err:?}");
}

#[test]
fn a_torn_last_side_store_record_is_dropped_on_open_and_adding_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, ids, vectors) = filled(dir.path(), "Flat", 600, 6);
    index.save().expect("save");
    let query = &vectors[..DIMS];
    let saved_answer = index.search(query, 10, &SearchFilter::default()).expect("search");
    // More events after the snapshot, then a crash in the middle of writing a record.
    let later: Vec<u64> = (0..5).map(|i| 9_000_000 + i).collect();
    let later_vectors = Rng(77).vectors(5);
    let later_fields: Vec<HitFields> = later.iter().map(|&id| fields_for(id)).collect();
    index.add(&later, &later_vectors, &later_fields).expect("add");
    drop(index);
    let fields_path = dir.path().join(FIELDS_FILE);
    let committed = fs::metadata(&fields_path).expect("stat").len();
    let mut file = OpenOptions::new().append(true).open(&fields_path).expect("open");
    file.write_all(&[0x90, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]).expect("torn write");
    drop(file);

    let mut reopened = EventIndex::open(dir.path()).expect("open drops the torn record");
    assert_eq!(reopened.len(), 600, "only the snapshot's events");
    assert_eq!(reopened.last_id(), ids.last().copied());
    assert!(!reopened.contains(later[0]));
    assert!(fs::metadata(&fields_path).expect("stat").len() < committed, "cut back to the snapshot");
    assert_eq!(reopened.search(query, 10, &SearchFilter::default()).expect("search"), saved_answer);

    // The caller re-adds what came after last_id; re-adding known ids is a no-op.
    assert_eq!(reopened.add(&later, &later_vectors, &later_fields).expect("add"), 5);
    assert_eq!(reopened.add(&later, &later_vectors, &later_fields).expect("add again"), 0);
    reopened.save().expect("save");
    drop(reopened);
    let again = EventIndex::open(dir.path()).expect("open");
    assert_eq!(again.len(), 605);
    let hit = &again.search(&later_vectors[..DIMS], 1, &SearchFilter::default()).expect("search")[0];
    assert_eq!((hit.id, &hit.fields), (later[0], &fields_for(later[0])));
}

#[test]
fn a_side_store_shorter_than_its_snapshot_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, _, _) = filled(dir.path(), "Flat", 100, 2);
    index.save().expect("save");
    drop(index);
    let fields_path = dir.path().join(FIELDS_FILE);
    let len = fs::metadata(&fields_path).expect("stat").len();
    OpenOptions::new().write(true).open(&fields_path).expect("open").set_len(len - 3).expect("truncate");
    let err = EventIndex::open(dir.path()).expect_err("refused");
    assert!(matches!(&err, IndexError::Corrupt { path, .. } if *path == fields_path), "{err:?}");
}

#[test]
fn rebuild_replaces_a_damaged_index_and_answers_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, ids, vectors) = filled(dir.path(), "Flat", 800, 12);
    index.save().expect("save");
    let query = Rng(1).vectors(1);
    let before = index.search(&query, 10, &SearchFilter::default()).expect("search");
    drop(index);
    fs::write(dir.path().join(MANIFEST_FILE), b"{").expect("damage");
    assert!(matches!(EventIndex::open(dir.path()), Err(IndexError::Corrupt { .. })));

    let items = ids.iter().enumerate().map(|(i, &id)| (id, vectors[i * DIMS..(i + 1) * DIMS].to_vec(), fields_for(id)));
    let rebuilt = EventIndex::rebuild_from(dir.path(), DIMS as u32, "Flat", items, 128).expect("rebuild");
    assert_eq!(rebuilt.search(&query, 10, &SearchFilter::default()).expect("search"), before);
    drop(rebuilt);
    assert_eq!(EventIndex::open(dir.path()).expect("open").len(), 800);
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = EventIndex::create(dir.path(), DIMS as u32, "Flat").expect("create");
    let vector = vec![0.5f32; DIMS];
    assert!(matches!(index.add(&[1, 2], &vector, &[fields_for(1)]), Err(IndexError::InvalidInput { .. })));
    let mut nan = vector.clone();
    nan[3] = f32::NAN;
    assert!(matches!(index.add(&[1], &nan, &[fields_for(1)]), Err(IndexError::InvalidInput { .. })));
    let mut big = fields_for(1);
    big.event_id = "x".repeat(5000);
    assert!(matches!(index.add(&[1], &vector, &[big]), Err(IndexError::FieldsTooLarge { id: 1, .. })));
    assert!(index.search(&vector[..3], 1, &SearchFilter::default()).is_err());
    assert!(index.is_empty());
    assert!(matches!(EventIndex::create(dir.path(), DIMS as u32, "Flat"), Err(IndexError::AlreadyExists { .. })));
    assert!(EventIndex::create(dir.path().join("other"), DIMS as u32, "NoSuchIndex").is_err());
}

#[test]
fn hnsw_recall_at_10_against_flat_is_at_least_0_95() {
    let flat_dir = tempfile::tempdir().expect("tempdir");
    let hnsw_dir = tempfile::tempdir().expect("tempdir");
    let n = 10_000;
    let (flat, _, _) = filled(flat_dir.path(), "Flat", n, 21);
    let (mut hnsw, _, _) = filled(hnsw_dir.path(), "HNSW32", n, 21);
    hnsw.set_search_parameter("efSearch", 64.0).expect("efSearch");
    let queries = Rng(22).vectors(200);
    let mut found = 0usize;
    for query in queries.chunks(DIMS) {
        let exact: HashSet<u64> = flat.search(query, 10, &SearchFilter::default()).expect("flat").iter().map(|h| h.id).collect();
        let approximate = hnsw.search(query, 10, &SearchFilter::default()).expect("hnsw");
        assert_eq!(approximate.len(), 10);
        found += approximate.iter().filter(|hit| exact.contains(&hit.id)).count();
    }
    let recall = found as f64 / (200.0 * 10.0);
    assert!(recall >= 0.95, "recall@10 = {recall}");
    // The setting survives a snapshot.
    hnsw.save().expect("save");
    drop(hnsw);
    let reopened = EventIndex::open(hnsw_dir.path()).expect("open");
    assert_eq!(reopened.factory(), "HNSW32");
    assert_eq!(reopened.len(), n);
}

#[test]
fn an_event_can_be_read_back_by_id_event_id_and_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, ids, vectors) = filled(dir.path(), "Flat", 300, 8);
    // Two events with real event ids and a shared address.
    let mut first = fields_for(5_000);
    first.event_id = "ev-0123456789abcdef01234567".to_owned();
    first.src_ip = "198.51.100.7".to_owned();
    let mut second = fields_for(5_001);
    second.event_id = "ev-fedcba987654321001234567".to_owned();
    second.dst_ip = "198.51.100.7".to_owned();
    let extra = Rng(9).vectors(2);
    index.add(&[5_000, 5_001], &extra, &[first.clone(), second.clone()]).expect("add");
    // An older event added after newer ones still takes its place by id.
    let mut older = fields_for(4_999);
    older.dst_ip = "198.51.100.7".to_owned();
    index.add(&[4_999], &Rng(13).vectors(1), &[older.clone()]).expect("add");
    index.save().expect("save");
    drop(index);

    let index = EventIndex::open(dir.path()).expect("open");
    let stored = index.get(ids[7]).expect("read").expect("event 7 is there");
    assert_eq!(stored.vector, vectors[7 * DIMS..8 * DIMS], "the vector comes back bit for bit");
    assert_eq!(stored.fields, fields_for(ids[7]));
    assert!(index.get(1).expect("read").is_none(), "an id never added");

    assert_eq!(index.find_event_id(&first.event_id).expect("lookup"), Some(5_000));
    assert_eq!(index.find_event_id(&second.event_id).expect("lookup"), Some(5_001));
    assert_eq!(index.find_event_id("ev-0123456789abcdef99999999").expect("lookup"), None, "same prefix, another event: the stored id is checked");

    let address = "198.51.100.7".parse().expect("address");
    let found = index.events_with_ip(address, &SearchFilter::default(), 10).expect("by address");
    assert_eq!(found, vec![second.clone(), first.clone(), older.clone()], "as source and as destination, newest first");
    let only_first = SearchFilter { actions: vec![first.action.clone()], ..SearchFilter::default() };
    assert_eq!(
        index.events_with_ip(address, &only_first, 10).expect("by address"),
        [second, first, older].into_iter().filter(|fields| fields.action == only_first.actions[0]).collect::<Vec<_>>()
    );
}

#[test]
fn a_read_only_reader_leaves_a_running_writers_files_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut writer, _ids, _vectors) = filled(dir.path(), "Flat", 200, 10);
    writer.save().expect("save");
    // The writer goes on adding (not yet saved): a reader opens beside it.
    let later: Vec<u64> = (0..3).map(|i| 8_000_000 + i).collect();
    let later_fields: Vec<HitFields> = later.iter().map(|&id| fields_for(id)).collect();
    writer.add(&later, &Rng(11).vectors(3), &later_fields).expect("add");
    let fields_path = dir.path().join(FIELDS_FILE);
    let length = fs::metadata(&fields_path).expect("stat").len();

    let mut reader = EventIndex::open_read_only(dir.path()).expect("open read-only");
    assert_eq!(reader.len(), 200, "the reader sees the snapshot");
    assert_eq!(fs::metadata(&fields_path).expect("stat").len(), length, "the writer's unsaved records are not cut");
    let error = reader.save().expect_err("a reader cannot save");
    assert!(error.to_string().contains("read-only"), "{error}");
    assert!(reader.add(&[1], &Rng(12).vectors(1), &[fields_for(1)]).is_err());

    writer.save().expect("the writer saves as before");
    assert_eq!(EventIndex::open(dir.path()).expect("open").len(), 203);
}

#[test]
fn an_ivf_index_waits_for_enough_events_to_train_and_answers_exactly_until_then() {
    // IVF16 trains at 16 x 40 = 640 events. Before: exact answers from the waiting
    // vectors, also after a reopen; after: FAISS answers with high recall.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut index, ids, vectors) = filled(dir.path(), "IVF16,Flat", 500, 21);
    let queries = Rng(22).vectors(20);
    let keep_all = |_: &HitFields| true;
    for query in queries.chunks(DIMS) {
        let hits = index.search(query, 10, &SearchFilter::default()).expect("search");
        assert_same_as_brute_force(&hits, &brute_force(&ids, &vectors, query, 10, keep_all));
    }
    let blocked = SearchFilter { actions: vec!["block".to_owned()], ..SearchFilter::default() };
    let hits = index.search(&queries[..DIMS], 10, &blocked).expect("search");
    assert_same_as_brute_force(&hits, &brute_force(&ids, &vectors, &queries[..DIMS], 10, |fields| fields.action == "block"));
    index.save().expect("save");
    drop(index);

    let mut index = EventIndex::open(dir.path()).expect("reopen an untrained index");
    assert_eq!(index.len(), 500);
    let hits = index.search(&queries[..DIMS], 10, &SearchFilter::default()).expect("search");
    assert_same_as_brute_force(&hits, &brute_force(&ids, &vectors, &queries[..DIMS], 10, keep_all));

    // 300 more: trained now.
    let more_ids: Vec<u64> = (0..300).map(|i| 50_000 + i).collect();
    let more_vectors = Rng(23).vectors(300);
    let more_fields: Vec<HitFields> = more_ids.iter().map(|&id| fields_for(id)).collect();
    assert_eq!(index.add(&more_ids, &more_vectors, &more_fields).expect("add"), 300);
    index.set_search_parameter("nprobe", 16.0).expect("nprobe");
    let all_ids: Vec<u64> = ids.iter().chain(&more_ids).copied().collect();
    let all_vectors: Vec<f32> = vectors.iter().chain(&more_vectors).copied().collect();
    for query in queries.chunks(DIMS) {
        let hits = index.search(query, 10, &SearchFilter::default()).expect("search");
        assert_same_as_brute_force(&hits, &brute_force(&all_ids, &all_vectors, query, 10, keep_all));
    }
    index.save().expect("save");
    drop(index);
    let index = EventIndex::open(dir.path()).expect("reopen the trained index");
    assert_eq!(index.len(), 800);
    let hit = &index.search(&more_vectors[..DIMS], 1, &SearchFilter::default()).expect("search")[0];
    assert_eq!(hit.id, more_ids[0]);
}
