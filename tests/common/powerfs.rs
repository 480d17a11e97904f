//! [`PowerFs`]: an in-memory FUSE filesystem, served by a thread of the test process, that models
//! a disk with a volatile write cache, so that a power cut can be simulated under ANY storage
//! engine and for every file of a data directory (tests/power_loss.rs).
//!
//! The model (strict, like tests/crash.rs's `SimDisk` for the redb file, but for every file and
//! directory):
//! - a file's data and length are durable as of its last `fsync`/`fdatasync`; every write and
//!   truncation since is volatile;
//! - a directory entry that was created, renamed in or out, or unlinked is volatile until that
//!   directory is fsynced (a rename within one directory is one change there; across directories it
//!   is two, one per directory, which may survive apart);
//! - `close` (FUSE `flush`/`release`) makes nothing durable.
//!
//! The power goes off at a chosen request that changes the disk ([`PowerFs::arm`]) or at
//! [`PowerFs::cut`]; every later request fails with EIO. At the cut the surviving
//! image is computed: per file, what was synced plus a random part of the later writes, each kept
//! whole, lost, or torn at 4 KiB boundaries (every 4 KiB piece kept or not), at a length the file had
//! at some point since its sync; per directory, what was synced plus a random subset of the later
//! entry changes, applied in order. The image is written as a real directory, which the next
//! [`PowerFs::mount`] loads as fully durable.
//!
//! With the power ON, [`PowerFs::fail`] and [`PowerFs::fail_at_sync`] make the fsyncs (and, if
//! asked, the writes and truncations) of chosen files and directories fail with EIO from a switch
//! the test flips (an [`IoFault`]; tests/io_faults.rs). A failed fsync makes nothing durable, and
//! what was written stays in the page cache: the next process on the same mount reads it, the
//! power cut after it may lose it, and a later successful fsync of that file makes it durable (a
//! filesystem that keeps the pages dirty and retries them) unless the fault says that the failed
//! fsync lost its writeback, as Linux does ([`IoFault::writeback_lost`]). [`PowerFs::heal`]
//! flips the switch back.
//!
//! Mounting needs root (the mount(2) system call, which the `fuser` crate makes itself when it can;
//! no libfuse, no `fusermount`) and `/dev/fuse`. Included with `#[path]` by the tests that use it
//! (each uses part of it).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Torn writes keep or lose this much at a time.
pub const SECTOR: usize = 4096;
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

#[derive(Debug, Clone)]
enum Unsynced {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

impl Unsynced {
    fn apply(&self, to: &mut Vec<u8>) {
        match self {
            Unsynced::Write { offset, data } => {
                let end = offset + data.len();
                if to.len() < end {
                    to.resize(end, 0);
                }
                to[*offset..end].copy_from_slice(data);
            }
            Unsynced::SetLen(len) => to.resize(*len, 0),
        }
    }
}

#[derive(Debug, Default)]
struct FileNode {
    /// What reads see: the page cache.
    data: Vec<u8>,
    /// As of the last fsync: survives any cut.
    durable: Vec<u8>,
    /// Everything since, in order.
    unsynced: Vec<Unsynced>,
}

/// One change of a directory: entries set (to an inode) or removed, together.
type DirChange = Vec<(OsString, Option<u64>)>;

#[derive(Debug, Default)]
struct DirNode {
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
    unsynced: Vec<DirChange>,
    parent: u64,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// What happened on the disk (for the test's summary).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskStats {
    pub writes: u64,
    pub written_bytes: u64,
    pub fsyncs: u64,
    pub dir_fsyncs: u64,
    /// At the cut: unsynced file writes kept whole, torn, lost.
    pub kept: u64,
    pub torn: u64,
    pub lost: u64,
    /// At the cut: unsynced directory changes kept and lost.
    pub dir_kept: u64,
    pub dir_lost: u64,
    /// File and directory fsyncs, and writes or truncations, that an [`IoFault`] failed.
    pub failed_syncs: u64,
    pub failed_writes: u64,
    /// Failed file fsyncs whose writes were then partly lost for good
    /// ([`IoFault::writeback_lost`]).
    pub lost_writebacks: u64,
}

impl DiskStats {
    pub fn add(&mut self, o: &DiskStats) {
        self.writes += o.writes;
        self.written_bytes += o.written_bytes;
        self.fsyncs += o.fsyncs;
        self.dir_fsyncs += o.dir_fsyncs;
        self.kept += o.kept;
        self.torn += o.torn;
        self.lost += o.lost;
        self.dir_kept += o.dir_kept;
        self.dir_lost += o.dir_lost;
        self.failed_syncs += o.failed_syncs;
        self.failed_writes += o.failed_writes;
        self.lost_writebacks += o.lost_writebacks;
    }
}

/// Which files and directories an [`IoFault`] hits, by their path under the mount point (say
/// `data/kvstore.redb`, `data/blobs/…`, or `data` itself).
pub type Files = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// An I/O error with the power on: fsyncs (file and directory) of the chosen [`Files`] fail with
/// EIO, and so do their writes and truncations if `writes` is set. Reads never fail.
#[derive(Clone)]
pub struct IoFault {
    pub files: Files,
    pub writes: bool,
    /// `Some(seed)`: a failed fsync of a file also does what Linux does after a failed writeback
    /// (it marks the pages clean): a random part of the file's writes since its last sync reached
    /// the disk (as at a power cut, seeded), and no later fsync writes the rest, although the
    /// page cache keeps showing it. `None`: they stay volatile until a later fsync succeeds.
    pub writeback_lost: Option<u64>,
}

impl IoFault {
    /// Every file and directory.
    pub fn all() -> Files {
        Arc::new(|_| true)
    }

    /// What lies under one of `dirs` (paths under the mount point), or does not (`inside` false).
    pub fn under(dirs: &[&str], inside: bool) -> Files {
        let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        Arc::new(move |p: &Path| dirs.iter().any(|d| p.starts_with(d)) == inside)
    }
}

impl std::fmt::Debug for IoFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IoFault {{ writes: {}, writeback_lost: {:?} }}",
            self.writes, self.writeback_lost
        )
    }
}

/// The switch of an [`IoFault`].
struct Failing {
    fault: IoFault,
    /// Flipped: every matching request fails.
    on: bool,
    /// Matching fsyncs still to succeed before the switch flips (at the next one), while off.
    syncs_left: Option<u64>,
    /// Set when the first request fails by this fault.
    failed: Arc<AtomicBool>,
    /// Decides what a lost writeback left on the disk.
    rng: StdRng,
}

struct Disk {
    /// The I/O fault with the power on, if any.
    failing: Option<Failing>,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// The power is off: every request fails.
    off: bool,
    /// Set with `off`, for the test to see.
    power_off: Arc<AtomicBool>,
    /// Requests that change the disk (writes, truncations, entry changes, fsyncs) so far.
    ops: u64,
    /// The power goes off at this one (it fails, as does every later request).
    cut_at: Option<u64>,
    stats: DiskStats,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Disk>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Disk {
    /// Loads a real directory as the disk's durable content.
    fn load(image: &Path) -> std::io::Result<Disk> {
        let mut disk = Disk {
            failing: None,
            nodes: HashMap::new(),
            next_ino: ROOT + 1,
            off: false,
            power_off: Arc::new(AtomicBool::new(false)),
            ops: 0,
            cut_at: None,
            stats: DiskStats::default(),
        };
        disk.load_dir(image, ROOT, ROOT)?;
        Ok(disk)
    }

    fn load_dir(&mut self, path: &Path, ino: u64, parent: u64) -> std::io::Result<()> {
        let mut dir = DirNode {
            parent,
            ..DirNode::default()
        };
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let child = self.next_ino;
            self.next_ino += 1;
            if entry.file_type()?.is_dir() {
                self.load_dir(&entry.path(), child, ino)?;
            } else {
                let data = std::fs::read(entry.path())?;
                self.nodes.insert(
                    child,
                    Node::File(FileNode {
                        durable: data.clone(),
                        data,
                        unsynced: Vec::new(),
                    }),
                );
            }
            dir.entries.insert(entry.file_name(), child);
        }
        dir.durable = dir.entries.clone();
        self.nodes.insert(ino, Node::Dir(dir));
        Ok(())
    }

    fn check(&self) -> Result<(), Errno> {
        if self.off {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    /// [`Disk::check`] for a request that changes the disk: counts it, and cuts the power if it
    /// is the chosen one.
    fn tick(&mut self) -> Result<(), Errno> {
        self.check()?;
        self.ops += 1;
        if self.cut_at == Some(self.ops) {
            self.power_off();
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// The path of `ino` under the mount point (a walk from the root: the trees are small).
    fn path_of(&self, ino: u64) -> Option<PathBuf> {
        fn walk(d: &Disk, dir: u64, at: &Path, ino: u64) -> Option<PathBuf> {
            let Some(Node::Dir(node)) = d.nodes.get(&dir) else {
                return None;
            };
            for (name, child) in &node.entries {
                let path = at.join(name);
                if *child == ino {
                    return Some(path);
                }
                if let Some(found) = walk(d, *child, &path, ino) {
                    return Some(found);
                }
            }
            None
        }
        if ino == ROOT {
            return Some(PathBuf::new());
        }
        walk(self, ROOT, Path::new(""), ino)
    }

    /// Whether the I/O fault hits `ino` (its switch aside).
    fn fault_hits(&self, ino: u64) -> bool {
        match &self.failing {
            Some(f) => self.path_of(ino).is_some_and(|p| (f.fault.files)(&p)),
            None => false,
        }
    }

    /// An fsync of `ino`: fails if the fault's switch is on (or flips now) for it.
    fn fault_sync(&mut self, ino: u64) -> Result<(), Errno> {
        if !self.fault_hits(ino) {
            return Ok(());
        }
        let Some(f) = self.failing.as_mut() else {
            return Ok(());
        };
        if !f.on {
            match &mut f.syncs_left {
                Some(0) => f.on = true,
                Some(n) => *n -= 1,
                None => {}
            }
        }
        if !f.on {
            return Ok(());
        }
        f.failed.store(true, Ordering::SeqCst);
        self.stats.failed_syncs += 1;
        if f.fault.writeback_lost.is_some() {
            if let Some(Node::File(file)) = self.nodes.get_mut(&ino) {
                file.durable = surviving(file, &mut f.rng, &mut self.stats);
                file.unsynced.clear();
                self.stats.lost_writebacks += 1;
            }
        }
        Err(Errno::EIO)
    }

    /// A write or truncation of `ino`: fails if the switch is on and the fault takes writes.
    fn fault_write(&mut self, ino: u64) -> Result<(), Errno> {
        let on = matches!(&self.failing, Some(f) if f.on && f.fault.writes);
        if !on || !self.fault_hits(ino) {
            return Ok(());
        }
        if let Some(f) = &self.failing {
            f.failed.store(true, Ordering::SeqCst);
        }
        self.stats.failed_writes += 1;
        Err(Errno::EIO)
    }

    fn power_off(&mut self) {
        self.off = true;
        self.power_off.store(true, Ordering::SeqCst);
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let (kind, size, perm, nlink) = match self.nodes.get(&ino) {
            Some(Node::File(f)) => (FileType::RegularFile, f.data.len() as u64, 0o644, 1),
            Some(Node::Dir(_)) => (FileType::Directory, 4096, 0o755, 2),
            None => return Err(Errno::ENOENT),
        };
        let now = SystemTime::UNIX_EPOCH;
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: SECTOR as u32,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut DirNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut FileNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// Applies a change to a directory's entries (volatile until the directory is fsynced).
    fn change(&mut self, dir: u64, change: DirChange) -> Result<(), Errno> {
        let d = self.dir(dir)?;
        for (name, to) in &change {
            match to {
                Some(ino) => d.entries.insert(name.clone(), *ino),
                None => d.entries.remove(name),
            };
        }
        d.unsynced.push(change);
        Ok(())
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.change(parent, vec![(name.to_owned(), Some(ino))])?;
        Ok(ino)
    }

    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => {
                for u in f.unsynced.drain(..) {
                    u.apply(&mut f.durable);
                }
                self.stats.fsyncs += 1;
            }
            Some(Node::Dir(d)) => {
                d.durable = d.entries.clone();
                d.unsynced.clear();
                self.stats.dir_fsyncs += 1;
            }
            None => return Err(Errno::ENOENT),
        }
        Ok(())
    }

    /// The surviving image of the tree under `ino`, written under `to`. `files` holds the
    /// surviving content of each file met so far: a file under two names (a rename across
    /// directories whose removal was lost) has one content.
    fn write_image(
        &mut self,
        ino: u64,
        to: &Path,
        rng: &mut StdRng,
        seen: &mut BTreeSet<u64>,
        files: &mut HashMap<u64, Vec<u8>>,
    ) -> std::io::Result<()> {
        if !seen.insert(ino) {
            return Ok(()); // a directory renamed under two names: keep the first
        }
        let Some(Node::Dir(d)) = self.nodes.get(&ino) else {
            return Ok(());
        };
        let mut entries = d.durable.clone();
        let (mut kept, mut lost) = (0, 0);
        for change in &d.unsynced {
            if rng.gen_bool(0.5) {
                kept += 1;
                for (name, to) in change {
                    match to {
                        Some(i) => entries.insert(name.clone(), *i),
                        None => entries.remove(name),
                    };
                }
            } else {
                lost += 1;
            }
        }
        self.stats.dir_kept += kept;
        self.stats.dir_lost += lost;
        std::fs::create_dir_all(to)?;
        for (name, child) in entries {
            let path = to.join(&name);
            match self.nodes.get(&child) {
                Some(Node::Dir(_)) => self.write_image(child, &path, rng, seen, files)?,
                Some(Node::File(f)) => {
                    let data = files
                        .entry(child)
                        .or_insert_with(|| surviving(f, rng, &mut self.stats));
                    std::fs::write(&path, data)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// What a cut leaves of a file: the synced content plus a random part of the later writes (each
/// kept whole, lost, or torn at [`SECTOR`] boundaries), at a length the file had at some point
/// since the sync (a lost extension reads as zeros).
fn surviving(f: &FileNode, rng: &mut StdRng, stats: &mut DiskStats) -> Vec<u8> {
    let mut image = f.durable.clone();
    let mut len = f.durable.len();
    let mut lengths = vec![len];
    for u in &f.unsynced {
        match u {
            Unsynced::SetLen(l) => len = *l,
            Unsynced::Write { offset, data } => {
                len = len.max(offset + data.len());
                let fate = rng.gen_range(0..10);
                match fate {
                    0..=3 => stats.kept += 1,
                    4..=7 => stats.lost += 1,
                    _ => stats.torn += 1,
                }
                let end = offset + data.len();
                let mut at = *offset;
                while at < end {
                    let next = end.min((at / SECTOR + 1) * SECTOR);
                    let keep = match fate {
                        0..=3 => true,
                        4..=7 => false,
                        _ => rng.gen_bool(0.5),
                    };
                    if keep {
                        if image.len() < next {
                            image.resize(next, 0);
                        }
                        image[at..next].copy_from_slice(&data[at - offset..next - offset]);
                    }
                    at = next;
                }
            }
        }
        lengths.push(len);
    }
    image.resize(lengths[rng.gen_range(0..lengths.len())], 0);
    image
}

struct PowerFsOps(Shared);

impl PowerFsOps {
    /// `fsync` and `fsyncdir` alike: a file's or a directory's pending changes made durable.
    fn sync(&self, ino: INodeNo, reply: ReplyEmpty) {
        let mut d = self.0.lock();
        let r = d
            .tick()
            .and_then(|()| d.fault_sync(ino.0))
            .and_then(|()| d.fsync(ino.0));
        answer_empty(reply, r);
    }
}

/// Answers a request that returns nothing but success or an error.
fn answer_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// Answers `open`/`opendir`: there are no handles to keep, so every open gets handle 0.
fn answer_opened(reply: ReplyOpen, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerFsOps {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut d = self.0.lock();
        let r = d.check().and_then(|()| {
            let ino = d.lookup(parent.0, name)?;
            d.attr(ino)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let d = self.0.lock();
        let r = d.check().and_then(|()| d.attr(ino.0));
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut d = self.0.lock();
        let r = d.tick().and_then(|()| {
            if let Some(size) = size {
                d.file(ino.0)?;
                d.fault_write(ino.0)?;
                let f = d.file(ino.0)?;
                let u = Unsynced::SetLen(size as usize);
                u.apply(&mut f.data);
                f.unsynced.push(u);
            }
            d.attr(ino.0)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut d = self.0.lock();
        let r = d.tick().and_then(|()| {
            let node = Node::Dir(DirNode {
                parent: parent.0,
                ..DirNode::default()
            });
            let ino = d.new_node(parent.0, name, node)?;
            d.attr(ino)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut d = self.0.lock();
        let r = d.tick().and_then(|()| {
            let ino = d.new_node(parent.0, name, Node::File(FileNode::default()))?;
            d.attr(ino)
        });
        match r {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut d = self.0.lock();
        let r = d.tick().and_then(|()| {
            let ino = d.lookup(parent.0, name)?;
            d.file(ino)?;
            d.change(parent.0, vec![(name.to_owned(), None)])
        });
        answer_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut d = self.0.lock();
        let r = d.tick().and_then(|()| {
            let ino = d.lookup(parent.0, name)?;
            if !d.dir(ino)?.entries.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            d.change(parent.0, vec![(name.to_owned(), None)])
        });
        answer_empty(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut d = self.0.lock();
        let r = d.tick().and_then(|()| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            let ino = d.lookup(parent.0, name)?;
            if let Ok(target) = d.lookup(newparent.0, newname) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                let moving_dir = matches!(d.nodes.get(&ino), Some(Node::Dir(_)));
                match d.nodes.get(&target) {
                    Some(Node::Dir(_)) if !moving_dir => return Err(Errno::EISDIR),
                    Some(Node::Dir(t)) if !t.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                    Some(Node::File(_)) if moving_dir => return Err(Errno::ENOTDIR),
                    _ => {}
                }
            }
            d.dir(newparent.0)?;
            if parent == newparent {
                d.change(
                    parent.0,
                    vec![(name.to_owned(), None), (newname.to_owned(), Some(ino))],
                )?;
            } else {
                d.change(parent.0, vec![(name.to_owned(), None)])?;
                d.change(newparent.0, vec![(newname.to_owned(), Some(ino))])?;
                if let Some(Node::Dir(moved)) = d.nodes.get_mut(&ino) {
                    moved.parent = newparent.0;
                }
            }
            Ok(())
        });
        answer_empty(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut d = self.0.lock();
        let r = d.check().and_then(|()| d.file(ino.0).map(drop));
        answer_opened(reply, r);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut d = self.0.lock();
        let r = d.check().and_then(|()| {
            let f = d.file(ino.0)?;
            let start = (offset as usize).min(f.data.len());
            let end = (start + size as usize).min(f.data.len());
            Ok(f.data[start..end].to_vec())
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut d = self.0.lock();
        let r = d.tick().and_then(|()| {
            d.file(ino.0)?;
            d.fault_write(ino.0)?;
            let f = d.file(ino.0)?;
            let u = Unsynced::Write {
                offset: offset as usize,
                data: data.to_vec(),
            };
            u.apply(&mut f.data);
            f.unsynced.push(u);
            d.stats.writes += 1;
            d.stats.written_bytes += data.len() as u64;
            Ok(data.len() as u32)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    /// `close`: makes nothing durable.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut d = self.0.lock();
        let r = d.check().and_then(|()| d.dir(ino.0).map(drop));
        answer_opened(reply, r);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut d = self.0.lock();
        let r = d.check().and_then(|()| {
            let dir = d.dir(ino.0)?;
            let mut all = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (dir.parent, FileType::Directory, OsString::from("..")),
            ];
            let children: Vec<(OsString, u64)> =
                dir.entries.iter().map(|(n, i)| (n.clone(), *i)).collect();
            for (name, child) in children {
                let kind = match d.nodes.get(&child) {
                    Some(Node::Dir(_)) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                all.push((child, kind, name));
            }
            Ok(all)
        });
        match r {
            Ok(all) => {
                for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room: 1 TiB free.
        let blocks = (1u64 << 40) / SECTOR as u64;
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 20,
            1 << 20,
            SECTOR as u32,
            255,
            SECTOR as u32,
        );
    }
}

/// A mounted [`PowerFs`]: the disk, and the FUSE session serving it on a background thread.
pub struct PowerFs {
    disk: Shared,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl PowerFs {
    /// Mounts at `mountpoint` (an empty directory) a disk whose durable content is a copy of the
    /// real directory `image`.
    pub fn mount(image: &Path, mountpoint: &Path) -> std::io::Result<PowerFs> {
        let disk = Shared(Arc::new(Mutex::new(Disk::load(image)?)));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("powerfs".into()),
            fuser::MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(PowerFsOps(disk.clone()), mountpoint, &config)?;
        Ok(PowerFs {
            disk,
            session: Some(session),
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Cuts the power at the `n`th request from now that changes the disk (a write, a
    /// truncation, an entry change or an fsync; often inside a commit, or at its sync): it and every
    /// later request fail with EIO. [`PowerFs::power_flag`] tells when that happened.
    pub fn arm(&self, n: u64) {
        let mut d = self.disk.lock();
        d.cut_at = Some(d.ops + n.max(1));
    }

    /// Flips an I/O fault's switch on now, the power staying on (see [`IoFault`]); replaces any
    /// earlier fault. The flag becomes true when a request first fails by it.
    pub fn fail(&self, fault: IoFault) -> Arc<AtomicBool> {
        self.set_fault(fault, true, None)
    }

    /// The same, but the switch flips at the `n`th fsync of a file or directory the fault hits,
    /// counted from now (that fsync fails, and everything the fault hits after it).
    pub fn fail_at_sync(&self, fault: IoFault, n: u64) -> Arc<AtomicBool> {
        self.set_fault(fault, false, Some(n.max(1) - 1))
    }

    fn set_fault(&self, fault: IoFault, on: bool, syncs_left: Option<u64>) -> Arc<AtomicBool> {
        let failed = Arc::new(AtomicBool::new(false));
        let rng = StdRng::seed_from_u64(fault.writeback_lost.unwrap_or(0));
        self.disk.lock().failing = Some(Failing {
            rng,
            fault,
            on,
            syncs_left,
            failed: failed.clone(),
        });
        failed
    }

    /// Flips the switch of the fault [`PowerFs::fail_at_sync`] set on now (its flag stays).
    pub fn switch_on(&self) {
        if let Some(f) = self.disk.lock().failing.as_mut() {
            f.on = true;
        }
    }

    /// The disk works again: no I/O fault. What the failed requests did not write is not there,
    /// and what the failed fsyncs did not make durable is still volatile.
    pub fn heal(&self) {
        self.disk.lock().failing = None;
    }

    /// What happened on the disk since the mount.
    pub fn stats(&self) -> DiskStats {
        self.disk.lock().stats
    }

    /// Becomes true when the power goes off.
    pub fn power_flag(&self) -> Arc<AtomicBool> {
        self.disk.lock().power_off.clone()
    }

    /// Cuts the power (if [`PowerFs::arm`] did not already): from now on every request fails; unmounts; writes what survived as a real
    /// directory at `image` (which must not exist). Returns what happened on the disk since the
    /// mount.
    pub fn cut(mut self, image: &Path, rng: &mut StdRng) -> std::io::Result<DiskStats> {
        let stats = {
            let mut d = self.disk.lock();
            d.power_off();
            d.write_image(ROOT, image, rng, &mut BTreeSet::new(), &mut HashMap::new())?;
            d.stats
        };
        self.unmount()?;
        Ok(stats)
    }

    fn unmount(&mut self) -> std::io::Result<()> {
        if let Some(session) = self.session.take() {
            if let Err(e) = session.umount_and_join() {
                // Busy (a process of the test still in it): detach it.
                let detached = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
                if !detached.is_ok_and(|s| s.success()) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        self.disk.lock().power_off();
        let _ = self.unmount();
    }
}
