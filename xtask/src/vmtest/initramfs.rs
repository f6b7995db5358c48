//! The VM's root file system, built as an initramfs: host files at their own paths (with the
//! symbolic links on the way, so `/lib64/ld-linux-x86-64.so.2` and merged-`/usr` paths resolve
//! as on the host), the shared libraries of every program (from `ldd`), files made here (the
//! init script, `/etc/passwd`), and kernel modules in dependency order.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufWriter;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::cpio::CpioWriter;
use crate::util;

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    /// Contents from a host file, with this mode.
    File(PathBuf, u32),
    /// Contents given here, with this mode.
    Bytes(Vec<u8>, u32),
    Symlink(PathBuf),
}

/// The file tree of the initramfs, keyed by absolute path inside the VM.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
    /// ELF files whose libraries still have to be added.
    elf_pending: Vec<PathBuf>,
    elf_done: BTreeSet<PathBuf>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the host file (or directory) at `path` at the same path, with every symbolic link
    /// met on the way (in its ancestors or the file itself) and the links' targets. ELF files
    /// are remembered so that [`Tree::add_libraries`] adds what they link to.
    pub fn add_host(&mut self, path: &Path) -> Result<()> {
        let phys = self.resolve(path, 0)?;
        let meta =
            std::fs::metadata(&phys).with_context(|| format!("cannot read {}", phys.display()))?;
        if meta.is_dir() {
            self.entries.entry(phys).or_insert(Entry::Dir);
            return Ok(());
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o7777;
        if is_elf(&phys) && !self.elf_done.contains(&phys) {
            self.elf_pending.push(phys.clone());
        }
        self.entries.insert(phys.clone(), Entry::File(phys, mode));
        Ok(())
    }

    /// Adds every file under the host directory `dir` (recursively) for which `keep` holds
    /// (called with the path relative to `dir`); a directory for which it fails is skipped
    /// whole.
    pub fn add_host_tree(&mut self, dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            self.add_host(&d)?;
            for e in
                std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
            {
                let p = e?.path();
                let rel = p.strip_prefix(dir).unwrap_or(&p);
                if !keep(rel) {
                    continue;
                }
                let ft = std::fs::symlink_metadata(&p)?.file_type();
                if ft.is_dir() {
                    stack.push(p);
                } else {
                    self.add_host(&p)?;
                }
            }
        }
        Ok(())
    }

    /// Adds a host file's contents at another path.
    pub fn add_file_as(&mut self, dest: &Path, src: &Path, mode: u32) -> Result<()> {
        if !src.is_file() {
            bail!("{} is not a file", src.display());
        }
        if is_elf(src) && !self.elf_done.contains(src) {
            self.elf_pending.push(src.to_path_buf());
        }
        self.entries
            .insert(dest.to_path_buf(), Entry::File(src.to_path_buf(), mode));
        Ok(())
    }

    /// Adds a file with the given contents.
    pub fn add_bytes(&mut self, dest: &Path, data: impl Into<Vec<u8>>, mode: u32) {
        self.entries
            .insert(dest.to_path_buf(), Entry::Bytes(data.into(), mode));
    }

    /// Adds a directory.
    pub fn add_dir(&mut self, dest: &Path) {
        self.entries.entry(dest.to_path_buf()).or_insert(Entry::Dir);
    }

    /// Adds the shared libraries (and the dynamic loader) of every ELF file added so far, and
    /// theirs, as `ldd` resolves them on the host.
    pub fn add_libraries(&mut self) -> Result<()> {
        while let Some(elf) = self.elf_pending.pop() {
            if !self.elf_done.insert(elf.clone()) {
                continue;
            }
            let out = util::output_raw(Command::new("ldd").arg(&elf))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                // Static executables and non-loadable objects: nothing to add.
                continue;
            }
            let (found, missing) = parse_ldd(&text);
            if !missing.is_empty() {
                bail!(
                    "{} needs libraries that are not on this machine: {}",
                    elf.display(),
                    missing.join(", ")
                );
            }
            for lib in found {
                self.add_host(&lib)?;
            }
        }
        Ok(())
    }

    /// Number of entries and total bytes of file contents.
    pub fn size(&self) -> (usize, u64) {
        let bytes = self
            .entries
            .values()
            .map(|e| match e {
                Entry::File(p, _) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                Entry::Bytes(b, _) => b.len() as u64,
                _ => 0,
            })
            .sum();
        (self.entries.len(), bytes)
    }

    /// Writes the tree as a `newc` cpio archive (parents before children).
    pub fn write_cpio(&self, out: &Path) -> Result<()> {
        let mut all: BTreeMap<PathBuf, &Entry> = BTreeMap::new();
        static DIR: Entry = Entry::Dir;
        for (p, e) in &self.entries {
            for a in p.ancestors().skip(1) {
                if a != Path::new("/") && a != Path::new("") {
                    all.entry(a.to_path_buf()).or_insert(&DIR);
                }
            }
            all.insert(p.clone(), e);
        }
        let f = std::fs::File::create(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let mut w = CpioWriter::new(BufWriter::with_capacity(1 << 20, f));
        for (p, e) in all {
            let name = p
                .strip_prefix("/")
                .unwrap_or(&p)
                .to_str()
                .with_context(|| format!("non-UTF-8 path {}", p.display()))?;
            let r = match e {
                Entry::Dir => w.dir(name, 0o755),
                Entry::File(src, mode) => {
                    let data = std::fs::read(src)
                        .with_context(|| format!("cannot read {}", src.display()))?;
                    w.file(name, *mode, &data)
                }
                Entry::Bytes(data, mode) => w.file(name, *mode, data),
                Entry::Symlink(t) => w.symlink(name, &t.to_string_lossy()),
            };
            r.with_context(|| format!("cannot write {} into {}", p.display(), out.display()))?;
        }
        w.finish()
            .with_context(|| format!("cannot finish {}", out.display()))?;
        Ok(())
    }

    /// The path of `path` with no symbolic link in it, recording every link met (and adding
    /// what it points to).
    fn resolve(&mut self, path: &Path, depth: u32) -> Result<PathBuf> {
        if depth > 16 {
            bail!("too many levels of symbolic links at {}", path.display());
        }
        if !path.is_absolute() {
            bail!("{} is not absolute", path.display());
        }
        let mut phys = PathBuf::from("/");
        for c in path.components() {
            match c {
                Component::Normal(n) => {
                    let cand = phys.join(n);
                    let meta = std::fs::symlink_metadata(&cand)
                        .with_context(|| format!("cannot read {}", cand.display()))?;
                    if meta.file_type().is_symlink() {
                        let target = std::fs::read_link(&cand)?;
                        self.entries
                            .insert(cand.clone(), Entry::Symlink(target.clone()));
                        let abs = if target.is_absolute() {
                            target
                        } else {
                            phys.join(target)
                        };
                        phys = self.resolve(&abs, depth + 1)?;
                    } else {
                        phys = cand;
                    }
                }
                Component::ParentDir => {
                    phys.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        Ok(phys)
    }
}

/// Whether `path` starts with the ELF magic.
fn is_elf(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The libraries `ldd` resolved (absolute paths) and the ones it could not find.
pub fn parse_ldd(out: &str) -> (Vec<PathBuf>, Vec<String>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        if let Some((name, rest)) = line.split_once(" => ") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                missing.push(name.trim().to_owned());
            } else if let Some(p) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                found.push(PathBuf::from(p));
            }
        } else if let Some(p) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            // The dynamic loader: `/lib64/ld-linux-x86-64.so.2 (0x...)`.
            found.push(PathBuf::from(p));
        }
    }
    (found, missing)
}

/// The `depends=` list of a kernel module's `.modinfo` section (module names).
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(i) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[i + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `.ko` files to load, dependencies first, for the modules `wanted` of the kernel whose
/// `lib/modules/<release>` is `modules_dir`. `depends` reads a module's dependencies.
pub fn module_load_order(
    modules_dir: &Path,
    wanted: &[&str],
    depends: &dyn Fn(&Path) -> Result<Vec<String>>,
) -> Result<Vec<PathBuf>> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut stack = vec![modules_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(stem) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                by_name.insert(stem.replace('-', "_"), p);
            }
        }
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        by_name: &BTreeMap<String, PathBuf>,
        depends: &dyn Fn(&Path) -> Result<Vec<String>>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
        depth: u32,
    ) -> Result<()> {
        let key = name.replace('-', "_");
        if depth > 32 || !seen.insert(key.clone()) {
            return Ok(());
        }
        let path = by_name
            .get(&key)
            .with_context(|| format!("kernel module {name} not found"))?;
        for dep in depends(path)? {
            visit(&dep, by_name, depends, seen, order, depth + 1)?;
        }
        order.push(path.clone());
        Ok(())
    }
    for w in wanted {
        visit(w, &by_name, depends, &mut seen, &mut order, 0)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                   \tlibfoo.so.2 => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let (found, missing) = parse_ldd(out);
        assert_eq!(
            found,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert_eq!(missing, vec!["libfoo.so.2".to_owned()]);
    }

    #[test]
    fn modinfo_depends() {
        let ko = b"junk\0license=GPL\0depends=stp,llc\0intree=Y\0";
        assert_eq!(module_depends(ko), vec!["stp", "llc"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }

    #[test]
    fn modules_in_dependency_order() {
        let dir = std::env::temp_dir().join(format!("xtask-mods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for p in [
            "net/bridge/bridge.ko",
            "net/802/stp.ko",
            "net/llc/llc.ko",
            "drivers/veth.ko",
        ] {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            let deps = match p {
                "net/bridge/bridge.ko" => "stp,llc",
                "net/802/stp.ko" => "llc",
                _ => "",
            };
            std::fs::write(&f, format!("x\0depends={deps}\0")).unwrap();
        }
        let read = |p: &Path| Ok(module_depends(&std::fs::read(p)?));
        let order = module_load_order(&dir, &["veth", "bridge"], &read).unwrap();
        let names: Vec<_> = order
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["veth.ko", "llc.ko", "stp.ko", "bridge.ko"]);
        assert!(module_load_order(&dir, &["nope"], &read).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_links_are_kept() {
        let dir = std::env::temp_dir().join(format!("xtask-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
        std::fs::write(dir.join("usr/lib/libx.so.1.2"), b"lib").unwrap();
        std::os::unix::fs::symlink("usr/lib", dir.join("lib")).unwrap();
        std::os::unix::fs::symlink("libx.so.1.2", dir.join("usr/lib/libx.so.1")).unwrap();
        let mut t = Tree::new();
        t.add_host(&dir.join("lib/libx.so.1")).unwrap();
        assert_eq!(
            t.entries.get(&dir.join("lib")),
            Some(&Entry::Symlink(PathBuf::from("usr/lib")))
        );
        assert_eq!(
            t.entries.get(&dir.join("usr/lib/libx.so.1")),
            Some(&Entry::Symlink(PathBuf::from("libx.so.1.2")))
        );
        assert!(matches!(
            t.entries.get(&dir.join("usr/lib/libx.so.1.2")),
            Some(Entry::File(..))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
