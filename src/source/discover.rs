//! Finding the files a source's `include` / `exclude` globs match.

use std::io;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The deepest a `**` pattern descends below its base directory.
const MAX_DEPTH: usize = 16;

/// The compiled globs of one source and the directories they can match in.
pub struct Discovery {
    include: GlobSet,
    exclude: GlobSet,
    exclude_names: GlobSet,
    roots: Vec<Root>,
}

/// A directory to list, and how deep its matches can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The directory part of a pattern before its first glob character.
    pub dir: PathBuf,
    /// How many levels below `dir` a match can sit (1: files directly in it).
    pub depth: usize,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// Splits a pattern into its literal base directory and the depth below it.
fn root_of(pattern: &str) -> Root {
    let path = Path::new(pattern);
    let mut dir = PathBuf::new();
    let mut rest = 0usize;
    let mut deep = false;
    let mut in_glob = false;
    for c in path.components() {
        let s = c.as_os_str().to_string_lossy();
        if !in_glob && (matches!(c, Component::RootDir | Component::Prefix(_)) || !has_glob(&s)) {
            dir.push(c.as_os_str());
        } else {
            in_glob = true;
            rest += 1;
            deep |= s.contains("**");
        }
    }
    if rest == 0 {
        // A literal path: list its directory.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        return Root {
            dir: parent,
            depth: 1,
        };
    }
    if dir.as_os_str().is_empty() {
        dir.push(".");
    }
    Root {
        dir,
        depth: if deep { MAX_DEPTH } else { rest },
    }
}

impl Discovery {
    /// Compiles a source's patterns (already checked by the config).
    /// A relative pattern is taken from the working directory; an exclude
    /// pattern without a `/` is matched against file names.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Discovery, globset::Error> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let absolute = |p: &str| -> String {
            if Path::new(p).is_absolute() {
                p.to_string()
            } else {
                let base = globset::escape(&cwd.to_string_lossy());
                format!(
                    "{}/{}",
                    base.trim_end_matches('/'),
                    p.trim_start_matches("./")
                )
            }
        };
        let mut inc = GlobSetBuilder::new();
        let mut roots: Vec<Root> = Vec::new();
        for p in include {
            let p = absolute(p);
            inc.add(glob(&p)?);
            let r = root_of(&p);
            if !roots.contains(&r) {
                roots.push(r);
            }
        }
        let mut exc = GlobSetBuilder::new();
        let mut exc_names = GlobSetBuilder::new();
        for p in exclude {
            if p.contains('/') {
                exc.add(glob(&absolute(p))?);
            } else {
                exc_names.add(glob(p)?);
            }
        }
        Ok(Discovery {
            include: inc.build()?,
            exclude: exc.build()?,
            exclude_names: exc_names.build()?,
            roots,
        })
    }

    /// The directories to watch for changes, and whether recursively.
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Whether a path is one this source reads.
    pub fn matches(&self, path: &Path) -> bool {
        self.include.is_match(path)
            && !self.exclude.is_match(path)
            && !path
                .file_name()
                .is_some_and(|n| self.exclude_names.is_match(n))
    }

    /// Lists every regular file that matches, sorted by path, with the
    /// directories and entries that could not be looked at.
    pub fn scan(&self) -> Listing {
        let mut out = Listing::default();
        for root in &self.roots {
            self.walk(&root.dir, root.depth, &mut out);
        }
        out.paths.sort();
        out.paths.dedup();
        out
    }

    fn walk(&self, dir: &Path, depth: usize, out: &mut Listing) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            // A directory that is not there holds no file: that is an answer.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => return out.errors.push((dir.to_path_buf(), e)),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    out.errors.push((dir.to_path_buf(), e));
                    continue;
                }
            };
            let path = entry.path();
            let ft = match entry.file_type() {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.errors.push((path, e));
                    continue;
                }
            };
            if ft.is_dir() {
                if depth > 1 {
                    self.walk(&path, depth - 1, out);
                }
            } else if self.matches(&path) {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => out.paths.push(path),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Perhaps a file: let opening it say what is wrong.
                    Err(_) => out.paths.push(path),
                }
            }
        }
    }
}

/// What one listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The matching files, sorted.
    pub paths: Vec<PathBuf>,
    /// Directories or entries that could not be read (not "not found"):
    /// files under them may exist, so none may be taken for deleted.
    pub errors: Vec<(PathBuf, io::Error)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_of_patterns() {
        assert_eq!(
            root_of("/var/log/*.ndjson"),
            Root {
                dir: "/var/log".into(),
                depth: 1
            }
        );
        assert_eq!(
            root_of("/var/log/*/x.log"),
            Root {
                dir: "/var/log".into(),
                depth: 2
            }
        );
        assert_eq!(root_of("/var/**/x.log").depth, MAX_DEPTH);
        assert_eq!(
            root_of("/var/log/a.log"),
            Root {
                dir: "/var/log".into(),
                depth: 1
            }
        );
        assert_eq!(
            root_of("*.log"),
            Root {
                dir: ".".into(),
                depth: 1
            }
        );
    }

    #[test]
    fn scan_includes_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for f in [
            "a.ndjson",
            "b.ndjson",
            "c.log",
            "skip.ndjson",
            "sub/d.ndjson",
        ] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let inc = vec![format!("{}/*.ndjson", d.display())];
        let exc = vec![format!("{}/skip*", d.display()), "*.old.ndjson".to_string()];
        std::fs::write(d.join("x.old.ndjson"), "").unwrap();
        let found = Discovery::new(&inc, &exc).unwrap().scan().paths;
        assert_eq!(found, [d.join("a.ndjson"), d.join("b.ndjson")]);
        let deep = Discovery::new(&[format!("{}/**/*.ndjson", d.display())], &[]).unwrap();
        assert_eq!(deep.scan().paths.len(), 5);
    }
}
