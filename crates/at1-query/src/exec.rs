//! Running a plan over one table object, through the reader: row groups the
//! zone maps exclude are never decoded, only the columns the query needs
//! are decoded, aggregates over row groups the predicate fully covers come
//! from the footer roll-ups, and LIMIT stops the scan.

use std::cmp::Ordering;
use std::mem::size_of;
use std::sync::Arc;
use std::time::Instant;

use super::budget::{Budget, Limits};
use super::expr::{AggFunc, ColumnZone, Datum, Verdict};
use super::output::RowSink;
use super::plan::{Item, OrderKey, Plan};
use super::spill::RowSpill;
use super::QueryError;
use crate::codec::columnar::ColumnChunk;
use crate::format::{RowGroupMeta, Table};
use crate::reader::{logical_value, AccessCost, Aggregate, Fold, Reader};
use crate::value::{Decimal, Scalar};

/// What a query read, shown with its result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    pub bytes_read: u64,
    pub total_block_bytes: u64,
    pub row_groups_total: u64,
    pub row_groups_scanned: u64,
    pub elapsed_ms: f64,
}

/// Rows between two checks of the time limit inside a row group.
const ROWS_PER_TIME_CHECK: usize = 1024;
/// A sorted result up to this many rows is put together in memory; a
/// larger one is spilled to a temp file as its row groups are decoded, then
/// read back in order.
const SORTED_ROWS_IN_MEMORY: usize = 16_384;

/// Runs `plan` within `limits` and streams its rows into `sink`.
pub fn run(plan: &Plan, reader: &Reader, limits: &Limits, sink: &mut dyn RowSink) -> Result<QueryStats, QueryError> {
    let start = Instant::now();
    let object = reader.object();
    let table = object.table().ok_or_else(|| QueryError::NotATable(plan.path.clone()))?;
    let mut exec = Exec { plan, reader, table, cost: AccessCost::default(), scanned: 0, budget: Budget::start(limits), limits };
    if plan.is_aggregate() {
        exec.aggregate(sink)?;
    } else {
        exec.select(sink)?;
    }
    Ok(QueryStats {
        bytes_read: exec.cost.bytes_read,
        total_block_bytes: object.footer().total_block_bytes(),
        row_groups_total: table.row_groups.len() as u64,
        row_groups_scanned: exec.scanned,
        elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
    })
}

struct Exec<'a> {
    plan: &'a Plan,
    reader: &'a Reader,
    table: &'a Table,
    cost: AccessCost,
    scanned: u64,
    budget: Budget,
    limits: &'a Limits,
}

/// The decoded columns of one row group that the query needs.
struct Decoded<'a> {
    table: &'a Table,
    chunks: Vec<Option<Arc<ColumnChunk>>>,
}

impl Decoded<'_> {
    fn value(&self, col: usize, row: usize) -> Datum {
        let chunk = self.chunks[col].as_ref()?;
        logical_value(chunk, row, self.table.columns[col].logical_type, &self.table.dialect)
    }

    /// Appends the group-key bytes of a value; a stored string is read in
    /// place rather than copied into a `Scalar` first.
    fn push_key(&self, col: usize, row: usize, out: &mut Vec<u8>) {
        let string_column = self.table.columns[col].logical_type == crate::value::ValueType::String;
        if let Some(s) = self.chunks[col].as_ref().and_then(|c| c.str_at(row)).filter(|_| string_column) {
            return push_str_key(s, out);
        }
        push_key(self.value(col, row).as_ref(), out);
    }
}

impl<'a> Exec<'a> {
    fn verdict(&self, meta: &RowGroupMeta) -> Verdict {
        let Some(filter) = &self.plan.filter else { return Verdict::All };
        filter.judge(&|c| ColumnZone { stats: &meta.stats[c], logical: self.table.columns[c].logical_type, rows: meta.row_count })
    }

    /// Decodes `cols` of row group `rg` (adding to what is decoded).
    fn decode(&mut self, rg: usize, cols: &[usize], d: &mut Decoded<'a>) -> Result<(), QueryError> {
        for &c in cols {
            if d.chunks[c].is_none() {
                d.chunks[c] = Some(self.reader.column(rg, c, &mut self.cost)?);
            }
        }
        Ok(())
    }

    /// Rows of row group `rg` that pass the filter (decoding its columns).
    fn matching_rows(&mut self, rg: usize, verdict: Verdict, d: &mut Decoded<'a>) -> Result<Vec<usize>, QueryError> {
        let rows = self.table.row_groups[rg].row_count as usize;
        match (&self.plan.filter, verdict) {
            (Some(filter), Verdict::Some) => {
                let mut cols = Vec::new();
                filter.columns(&mut cols);
                self.decode(rg, &cols, d)?;
                let mut passing = Vec::new();
                for r in 0..rows {
                    if r % ROWS_PER_TIME_CHECK == 0 {
                        self.budget.check_time()?;
                    }
                    if filter.passes(&|c| d.value(c, r)) {
                        passing.push(r);
                    }
                }
                Ok(passing)
            }
            _ => Ok((0..rows).collect()),
        }
    }

    /// A non-aggregate query: rows in file order, or sorted.
    fn select(&mut self, sink: &mut dyn RowSink) -> Result<(), QueryError> {
        if !self.plan.order_by.is_empty() {
            return self.select_sorted(sink);
        }
        let plan = self.plan;
        let wanted = plan.limit.map(|l| l.saturating_add(plan.offset));
        let mut produced = 0u64;
        for rg in 0..self.table.row_groups.len() {
            if wanted.is_some_and(|w| produced >= w) {
                break; // LIMIT reached: the rest is never read
            }
            let Some((rows, d)) = self.scan_row_group(rg, &plan.columns_of_items())? else { continue };
            for r in rows {
                if produced >= plan.offset {
                    sink.row(&self.row_values(&d, r)[..plan.visible])?;
                }
                produced += 1;
                if wanted.is_some_and(|w| produced >= w) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Prunes, filters and decodes one row group: the passing rows and
    /// the decoded `cols` (None when the zone maps or the filter rule out
    /// every row).
    fn scan_row_group(&mut self, rg: usize, cols: &[usize]) -> Result<Option<(Vec<usize>, Decoded<'a>)>, QueryError> {
        self.budget.check_time()?;
        let verdict = self.verdict(&self.table.row_groups[rg]);
        if verdict == Verdict::None {
            return Ok(None);
        }
        self.scanned += 1;
        let mut d = Decoded { table: self.table, chunks: vec![None; self.table.columns.len()] };
        let rows = self.matching_rows(rg, verdict, &mut d)?;
        if rows.is_empty() {
            return Ok(None);
        }
        self.decode(rg, cols, &mut d)?;
        Ok(Some((rows, d)))
    }

    fn row_values(&self, d: &Decoded<'_>, r: usize) -> Vec<Datum> {
        self.plan.items.iter().map(|i| if let Item::Column(c) = i { d.value(*c, r) } else { None }).collect()
    }

    /// ORDER BY in two passes: the sort keys of every passing row first
    /// (only those columns decoded), then the full rows of the winners —
    /// so a top-k reads its key column plus the row groups of k rows.
    fn select_sorted(&mut self, sink: &mut dyn RowSink) -> Result<(), QueryError> {
        let plan = self.plan;
        let key_cols: Vec<usize> = plan.order_by.iter().filter_map(|k| if let Item::Column(c) = plan.items[k.item] { Some(c) } else { None }).collect();
        let mut keys = SortKeys::new(&plan.order_by, plan.limit.map(|l| l.saturating_add(plan.offset)));
        for rg in 0..self.table.row_groups.len() {
            let Some((rows, d)) = self.scan_row_group(rg, &key_cols)? else { continue };
            for (i, r) in rows.into_iter().enumerate() {
                if i % ROWS_PER_TIME_CHECK == 0 {
                    self.budget.check_time()?;
                }
                keys.push(key_cols.iter().map(|&c| d.value(c, r)), (rg as u32, r as u32), &mut self.budget)?;
            }
        }
        let winners = keys.finish(&mut self.budget)?;
        let end = plan.limit.map_or(usize::MAX, |l| plan.offset.saturating_add(l) as usize);
        let shown: Vec<RowId> = winners.into_iter().take(end).skip(plan.offset as usize).collect();
        if shown.len() <= SORTED_ROWS_IN_MEMORY {
            self.emit_in_memory(&shown, sink)
        } else {
            self.emit_spilled(&shown, sink)
        }
    }

    /// The second pass's order: (row group, row, position in the output),
    /// so that each row group is decoded once.
    fn by_row_group(&mut self, shown: &[RowId]) -> Result<Vec<(u32, u32, u32)>, QueryError> {
        self.budget.charge((shown.len() * size_of::<(u32, u32, u32)>()) as u64, "ORDER BY")?;
        let mut by_group: Vec<(u32, u32, u32)> = shown.iter().enumerate().map(|(pos, &(rg, r))| (rg, r, pos as u32)).collect();
        by_group.sort_unstable();
        Ok(by_group)
    }

    /// Decodes the output columns of each row group that holds a shown row
    /// once, handing `place` each row's values and output position.
    fn fetch_rows(&mut self, by_group: &[(u32, u32, u32)], mut place: impl FnMut(usize, Vec<Datum>) -> Result<(), QueryError>) -> Result<(), QueryError> {
        let item_cols = self.plan.columns_of_items();
        let mut i = 0;
        while i < by_group.len() {
            self.budget.check_time()?;
            let rg = by_group[i].0 as usize;
            let mut d = Decoded { table: self.table, chunks: vec![None; self.table.columns.len()] };
            self.decode(rg, &item_cols, &mut d)?;
            while i < by_group.len() && by_group[i].0 as usize == rg {
                let (_, r, pos) = by_group[i];
                place(pos as usize, self.row_values(&d, r as usize))?;
                i += 1;
            }
        }
        Ok(())
    }

    fn emit_in_memory(&mut self, shown: &[RowId], sink: &mut dyn RowSink) -> Result<(), QueryError> {
        let by_group = self.by_row_group(shown)?;
        let mut out: Vec<Vec<Datum>> = vec![Vec::new(); shown.len()];
        self.fetch_rows(&by_group, |pos, row| {
            out[pos] = row;
            Ok(())
        })?;
        for row in out {
            sink.row(&row[..self.plan.visible])?;
        }
        Ok(())
    }

    /// A large sorted result: rows are written to a temp file in row-group
    /// order as they are decoded, then read back in sorted order — memory
    /// holds an offset per row, not the rows.
    fn emit_spilled(&mut self, shown: &[RowId], sink: &mut dyn RowSink) -> Result<(), QueryError> {
        let by_group = self.by_row_group(shown)?;
        self.budget.charge((shown.len() * size_of::<u64>()) as u64, "ORDER BY")?;
        let mut offsets = vec![0u64; shown.len()];
        let mut spill = RowSpill::new(self.limits.spill_dir.as_deref())?;
        let visible = self.plan.visible;
        self.fetch_rows(&by_group, |pos, row| {
            offsets[pos] = spill.write(&row[..visible])?;
            Ok(())
        })?;
        drop(by_group);
        let mut row = Vec::with_capacity(visible);
        for (i, &at) in offsets.iter().enumerate() {
            if i % ROWS_PER_TIME_CHECK == 0 {
                self.budget.check_time()?;
            }
            spill.read(at, &mut row)?;
            sink.row(&row)?;
        }
        Ok(())
    }

    /// An aggregate query (with or without GROUP BY).
    fn aggregate(&mut self, sink: &mut dyn RowSink) -> Result<(), QueryError> {
        let plan = self.plan;
        let mut groups: Groups = Groups::default();
        if plan.group_by.is_empty() {
            groups.entry(Vec::new(), plan, &mut self.budget)?; // one row even over no rows
        }
        let agg_cols: Vec<usize> = plan.aggregates.iter().filter_map(|(_, c)| *c).collect();
        for rg in 0..self.table.row_groups.len() {
            self.budget.check_time()?;
            let meta = &self.table.row_groups[rg];
            let verdict = self.verdict(meta);
            if verdict == Verdict::None {
                continue;
            }
            if verdict == Verdict::All && self.fold_rollups(meta, &mut groups) {
                continue; // answered from the footer: nothing decoded
            }
            self.scanned += 1;
            let mut d = Decoded { table: self.table, chunks: vec![None; self.table.columns.len()] };
            let rows = self.matching_rows(rg, verdict, &mut d)?;
            if rows.is_empty() {
                continue;
            }
            self.decode(rg, &plan.group_by, &mut d)?;
            self.decode(rg, &agg_cols, &mut d)?;
            let mut key = Vec::new();
            for (i, r) in rows.into_iter().enumerate() {
                if i % ROWS_PER_TIME_CHECK == 0 {
                    self.budget.check_time()?;
                }
                key.clear();
                for &c in &plan.group_by {
                    d.push_key(c, r, &mut key);
                }
                let g = groups.entry_by(&key, || plan.group_by.iter().map(|&c| d.value(c, r)).collect(), plan, &mut self.budget)?;
                for (i, (func, col)) in plan.aggregates.iter().enumerate() {
                    match (func, col) {
                        (AggFunc::CountStar, _) => g.folds[i].count_rows(1),
                        (_, Some(c)) => {
                            if let Some(v) = d.value(*c, r) {
                                g.folds[i].fold.add_value(&v);
                            }
                        }
                        (_, None) => {}
                    }
                }
            }
        }
        let rows: Vec<Vec<Datum>> = groups
            .groups
            .into_iter()
            .map(|g| {
                plan.items
                    .iter()
                    .map(|item| match item {
                        Item::Column(c) => plan.group_by.iter().position(|x| x == c).and_then(|p| g.key[p].clone()),
                        Item::Aggregate(a) => g.folds[*a].clone().finish(),
                    })
                    .collect()
            })
            .collect();
        if plan.order_by.is_empty() {
            let end = plan.limit.map_or(usize::MAX, |l| plan.offset.saturating_add(l) as usize);
            for row in rows.iter().take(end).skip(plan.offset as usize) {
                sink.row(&row[..plan.visible])?;
            }
            return Ok(());
        }
        let sorted = sort_rows(rows, &plan.order_by, plan.limit.map(|l| l.saturating_add(plan.offset)));
        emit(sorted, plan, sink)
    }

    /// Adds a row group that the predicate fully covers from its roll-ups.
    /// Possible when every aggregate has a usable roll-up and every GROUP
    /// BY column is constant (and not NULL) in the row group. Returns false
    /// (having added nothing) otherwise.
    fn fold_rollups(&self, meta: &RowGroupMeta, groups: &mut Groups) -> bool {
        let plan = self.plan;
        let mut key = Vec::with_capacity(plan.group_by.len());
        for &c in &plan.group_by {
            let s = &meta.stats[c];
            match (&s.min, &s.max) {
                (Some(lo), Some(hi)) if s.nulls == 0 && lo == hi && crate::reader::stats_apply(s, self.table.columns[c].logical_type) => {
                    key.push(Some(lo.clone()))
                }
                _ => return false,
            }
        }
        // Try on copies, so a roll-up that cannot answer leaves no trace.
        let mut trial = groups.get(&key).map_or_else(|| Group::new(key.clone(), plan), Clone::clone);
        for (i, (func, col)) in plan.aggregates.iter().enumerate() {
            let ok = match (func, col) {
                (AggFunc::CountStar, _) => {
                    trial.folds[i].count_rows(meta.row_count);
                    true
                }
                (_, Some(c)) => trial.folds[i].fold.add_stats(&meta.stats[*c], self.table.columns[*c].logical_type),
                (_, None) => false,
            };
            if !ok {
                return false;
            }
        }
        groups.put(trial);
        true
    }
}

/// One aggregate's running state.
#[derive(Debug, Clone)]
struct AggState {
    func: AggFunc,
    fold: Fold,
    rows: u64,
}

impl AggState {
    fn new(func: AggFunc) -> Self {
        let op = match func {
            AggFunc::CountStar | AggFunc::Count => Aggregate::Count,
            AggFunc::Sum | AggFunc::Avg => Aggregate::Sum,
            AggFunc::Min => Aggregate::Min,
            AggFunc::Max => Aggregate::Max,
        };
        Self { func, fold: Fold::new(op), rows: 0 }
    }

    fn count_rows(&mut self, n: u64) {
        self.rows += n;
    }

    fn finish(self) -> Datum {
        match self.func {
            AggFunc::CountStar => Some(Scalar::Int(self.rows as i64)),
            AggFunc::Avg => {
                let n = self.fold.values();
                let sum = self.fold.finish()?;
                Some(Scalar::Float(sum.as_f64()? / n as f64))
            }
            _ => self.fold.finish(),
        }
    }
}

#[derive(Debug, Clone)]
struct Group {
    key: Vec<Datum>,
    folds: Vec<AggState>,
}

impl Group {
    fn new(key: Vec<Datum>, plan: &Plan) -> Self {
        Self { key, folds: plan.aggregates.iter().map(|(f, _)| AggState::new(*f)).collect() }
    }
}

/// Groups in first-seen order, found by a byte form of their key.
#[derive(Default)]
struct Groups {
    index: rustc_hash::FxHashMap<Vec<u8>, usize>,
    groups: Vec<Group>,
}

impl Groups {
    /// The group whose key bytes are `key` (made from `values` if new,
    /// and charged to the budget).
    fn entry_by(&mut self, key: &[u8], values: impl FnOnce() -> Vec<Datum>, plan: &Plan, budget: &mut Budget) -> Result<&mut Group, QueryError> {
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => {
                let group = Group::new(values(), plan);
                budget.charge(group_bytes(&group, key.len()), "GROUP BY")?;
                self.groups.push(group);
                self.index.insert(key.to_vec(), self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        Ok(&mut self.groups[i])
    }

    fn entry(&mut self, key: Vec<Datum>, plan: &Plan, budget: &mut Budget) -> Result<&mut Group, QueryError> {
        let bytes = group_key(&key);
        self.entry_by(&bytes, || key, plan, budget)
    }

    /// Replaces (or adds) the group with `g`'s key.
    fn put(&mut self, g: Group) {
        let bytes = group_key(&g.key);
        match self.index.get(&bytes) {
            Some(&i) => self.groups[i] = g,
            None => {
                self.groups.push(g);
                self.index.insert(bytes, self.groups.len() - 1);
            }
        }
    }

    fn get(&self, key: &[Datum]) -> Option<&Group> {
        self.index.get(&group_key(key)).map(|&i| &self.groups[i])
    }
}

/// A byte key under which equal values (1.5 and 1.50, 2 and 2.0) meet.
fn group_key(values: &[Datum]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        push_key(v.as_ref(), &mut out);
    }
    out
}

/// A string's key bytes, the same as `push_key` gives `Scalar::Str`.
fn push_str_key(s: &[u8], out: &mut Vec<u8>) {
    out.push(5);
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

fn push_key(v: Option<&Scalar>, out: &mut Vec<u8>) {
    match v {
        None => out.push(0),
        Some(Scalar::Int(i)) => push_number(out, Decimal { mantissa: *i, scale: 0 }),
        Some(Scalar::Decimal(d)) => push_number(out, *d),
        Some(Scalar::Float(f)) => {
            out.push(2);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Some(Scalar::Timestamp(t)) => {
            out.push(3);
            out.extend_from_slice(&t.to_le_bytes());
        }
        Some(Scalar::Date(d)) => {
            out.push(3);
            out.extend_from_slice(&(i64::from(*d) * 86_400).to_le_bytes());
        }
        Some(Scalar::Bool(b)) => out.extend_from_slice(&[4, u8::from(*b)]),
        Some(Scalar::Str(s)) => push_str_key(s, out),
    }
}

fn push_number(out: &mut Vec<u8>, mut d: Decimal) {
    while d.scale > 0 && d.mantissa % 10 == 0 {
        d.mantissa /= 10;
        d.scale -= 1;
    }
    out.push(1);
    out.extend_from_slice(&d.mantissa.to_le_bytes());
    out.push(d.scale);
}

/// What a group costs: its key twice (the index's bytes and the values),
/// its aggregate states, and the containers' per-entry overhead.
fn group_bytes(g: &Group, key_bytes: usize) -> u64 {
    let values: usize = g.key.iter().map(datum_bytes).sum();
    (size_of::<Group>() + values + key_bytes + 2 * size_of::<Vec<u8>>() + size_of::<usize>() + g.folds.len() * size_of::<AggState>()) as u64
}

/// A value's size, its heap included.
fn datum_bytes(d: &Datum) -> usize {
    size_of::<Datum>() + if let Some(Scalar::Str(s)) = d { s.capacity() } else { 0 }
}

/// Where a candidate row is: (row group, row).
type RowId = (u32, u32);

/// The sort keys of candidate rows, flat (`width` values a row) with their
/// ids beside them; with a limit, only the best `keep` rows are kept, so
/// memory follows the limit, not the table. Charged to the budget as it
/// grows.
struct SortKeys {
    /// ORDER BY keys, each naming its place in a row's key values.
    order: Vec<OrderKey>,
    width: usize,
    keys: Vec<Datum>,
    ids: Vec<RowId>,
    keep: Option<usize>,
    /// Heap bytes of the string keys held.
    heap: u64,
    charged: u64,
}

impl SortKeys {
    fn new(order: &[OrderKey], keep: Option<u64>) -> Self {
        let order = order.iter().enumerate().map(|(i, k)| OrderKey { item: i, ..k.clone() }).collect();
        Self { order, width: 0, keys: Vec::new(), ids: Vec::new(), keep: keep.map(|k| k as usize), heap: 0, charged: 0 }
    }

    fn push(&mut self, key: impl Iterator<Item = Datum>, id: RowId, budget: &mut Budget) -> Result<(), QueryError> {
        let before = self.keys.len();
        self.keys.extend(key);
        self.width = self.keys.len() - before;
        self.heap += self.keys[before..].iter().map(|d| (datum_bytes(d) - size_of::<Datum>()) as u64).sum::<u64>();
        self.ids.push(id);
        if let Some(k) = self.keep {
            if self.ids.len() >= 2 * k.max(512) {
                self.compact(k);
            }
        }
        self.recharge(budget)
    }

    /// Charges (or gives back) the change in what the buffers hold.
    fn recharge(&mut self, budget: &mut Budget) -> Result<(), QueryError> {
        let now = (self.keys.capacity() * size_of::<Datum>() + self.ids.capacity() * size_of::<RowId>()) as u64 + self.heap;
        if now >= self.charged {
            let more = now - self.charged;
            self.charged = now;
            budget.charge(more, "ORDER BY")
        } else {
            budget.release(self.charged - now);
            self.charged = now;
            Ok(())
        }
    }

    fn key(&self, i: u32) -> &[Datum] {
        let start = i as usize * self.width;
        &self.keys[start..start + self.width]
    }

    /// Row positions in sorted order. A stable sort: ties keep the order
    /// they came in (file order).
    fn sorted(&self) -> Vec<u32> {
        let mut perm: Vec<u32> = (0..self.ids.len() as u32).collect();
        perm.sort_by(|&a, &b| order_rows(&self.order, self.key(a), self.key(b)));
        perm
    }

    /// Keeps the best `k` rows, in sorted order (which keeps ties in file
    /// order for later sorts).
    fn compact(&mut self, k: usize) {
        let mut perm = self.sorted();
        perm.truncate(k);
        let mut keys = Vec::with_capacity(perm.len() * self.width);
        let mut heap = 0;
        for &i in &perm {
            for d in self.key(i) {
                heap += (datum_bytes(d) - size_of::<Datum>()) as u64;
                keys.push(d.clone());
            }
        }
        self.ids = perm.iter().map(|&i| self.ids[i as usize]).collect();
        self.keys = keys;
        self.heap = heap;
    }

    fn finish(mut self, budget: &mut Budget) -> Result<Vec<RowId>, QueryError> {
        budget.charge((self.ids.len() * size_of::<u32>()) as u64, "ORDER BY")?;
        let mut perm = self.sorted();
        if let Some(k) = self.keep {
            perm.truncate(k);
        }
        let ids = perm.into_iter().map(|i| self.ids[i as usize]).collect();
        self.keys = Vec::new();
        self.heap = 0;
        self.recharge(budget)?;
        Ok(ids)
    }
}

/// Whole rows (of groups) in ORDER BY order, the best `keep` of them.
fn sort_rows(mut rows: Vec<Vec<Datum>>, keys: &[OrderKey], keep: Option<u64>) -> Vec<Vec<Datum>> {
    // A stable sort: ties keep their first-seen order.
    rows.sort_by(|a, b| order_rows(keys, a, b));
    if let Some(k) = keep {
        rows.truncate(k as usize);
    }
    rows
}

fn order_rows(keys: &[OrderKey], a: &[Datum], b: &[Datum]) -> Ordering {
    for k in keys {
        let ord = match (&a[k.item], &b[k.item]) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => {
                if k.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (Some(_), None) => {
                if k.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (Some(x), Some(y)) => {
                let o = x.compare(y).unwrap_or(Ordering::Equal);
                if k.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn emit(rows: Vec<Vec<Datum>>, plan: &Plan, sink: &mut dyn RowSink) -> Result<(), QueryError> {
    let end = plan.limit.map_or(usize::MAX, |l| plan.offset.saturating_add(l) as usize);
    for row in rows.iter().take(end).skip(plan.offset as usize) {
        sink.row(&row[..plan.visible])?;
    }
    Ok(())
}
