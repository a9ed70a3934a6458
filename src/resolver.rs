//! Where `import` finds modules: `glow/...` from the standard library embedded in the binary
//! (or `--stdlib DIR` while editing it), anything else relative to the importing script and
//! confined to the script's directory tree: no absolute paths, no `../` escape (checked on the
//! real path too, so a symlink cannot lead out).

use include_dir::{Dir, include_dir};
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

pub static STDLIB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/stdlib");

/// How an embedded stdlib module is named in errors: `stdlib/glow/git.rhai`.
pub const STDLIB_PREFIX: &str = "stdlib/";

/// Texts of every source compiled in this run (script and modules), by source name, for
/// rendering errors with carets; and the files behind them, for watch mode.
#[derive(Default, Debug)]
pub struct Sources {
    pub texts: HashMap<String, String>,
    /// Files on disk the run depends on (imported modules), in import order.
    pub files: Vec<PathBuf>,
}

impl Sources {
    /// Every module the run compiled (each source but the script) with the SHA-256 of its
    /// text, sorted by name: `run_start`'s `modules`, the attestation's dependencies.
    pub fn module_digests(&self, script: &str) -> Vec<serde_json::Value> {
        use sha2::{Digest, Sha256};
        let mut modules: Vec<(&String, &String)> = self
            .texts
            .iter()
            .filter(|(name, _)| *name != script)
            .collect();
        modules.sort();
        modules
            .into_iter()
            .map(|(name, text)| {
                serde_json::json!({ "name": name, "sha256": hex::encode(Sha256::digest(text)) })
            })
            .collect()
    }
}

pub type SharedSources = Rc<RefCell<Sources>>;

pub struct Resolver {
    /// Imports may not leave this directory (absolute, normalised).
    root: PathBuf,
    stdlib_override: Option<PathBuf>,
    sources: SharedSources,
    cache: RefCell<HashMap<String, Shared<Module>>>,
}

impl Resolver {
    pub fn new(root: PathBuf, stdlib_override: Option<PathBuf>, sources: SharedSources) -> Self {
        Self {
            root: normalize(&root),
            stdlib_override,
            sources,
            cache: RefCell::default(),
        }
    }

    fn refuse(path: &str, why: String, pos: Position) -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(
            format!("import \"{path}\" refused: {why}").into(),
            pos,
        ))
    }

    /// Finds the text of a module: (source name, text, file on disk if any).
    fn locate(
        &self,
        importer: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<(String, String, Option<PathBuf>), Box<EvalAltResult>> {
        let with_ext = if path.ends_with(".rhai") {
            path.to_owned()
        } else {
            format!("{path}.rhai")
        };
        if Path::new(path).is_absolute() {
            return Err(Self::refuse(
                path,
                "absolute paths are not allowed; import relative to the script".into(),
                pos,
            ));
        }
        if path.starts_with("glow/") {
            if with_ext.split('/').any(|part| part == "..") {
                return Err(Self::refuse(
                    path,
                    "'..' is not allowed in a stdlib path".into(),
                    pos,
                ));
            }
            let name = format!("{STDLIB_PREFIX}{with_ext}");
            if let Some(dir) = &self.stdlib_override {
                let file = dir.join(&with_ext);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    Self::refuse(
                        path,
                        format!("cannot read {} (--stdlib): {e}", file.display()),
                        pos,
                    )
                })?;
                return Ok((file.display().to_string(), text, Some(file)));
            }
            let file = STDLIB.get_file(&with_ext).ok_or_else(|| {
                Box::new(EvalAltResult::ErrorModuleNotFound(path.to_owned(), pos))
            })?;
            let text = file.contents_utf8().unwrap_or_default().to_owned();
            return Ok((name, text, None));
        }
        let base = importer
            .filter(|source| !source.starts_with('<') && !source.starts_with(STDLIB_PREFIX))
            .and_then(|source| Path::new(source).parent().map(Path::to_owned))
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir))
            .unwrap_or_else(|| self.root.clone());
        let wanted = normalize(&base.join(&with_ext));
        if !wanted.starts_with(&self.root) {
            return Err(Self::refuse(
                path,
                format!(
                    "it resolves outside the script's directory ({})",
                    self.root.display()
                ),
                pos,
            ));
        }
        if let (Ok(real), Ok(real_root)) = (wanted.canonicalize(), self.root.canonicalize())
            && !real.starts_with(&real_root)
        {
            return Err(Self::refuse(
                path,
                "a symlink leads outside the script's directory".into(),
                pos,
            ));
        }
        let text = std::fs::read_to_string(&wanted).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Box::new(EvalAltResult::ErrorModuleNotFound(path.to_owned(), pos))
            } else {
                Self::refuse(path, format!("cannot read {}: {e}", wanted.display()), pos)
            }
        })?;
        let name = display_path(&wanted);
        Ok((name, text, Some(wanted)))
    }
}

/// A path relative to the working directory when it is below it (shorter errors).
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_owned))
        .unwrap_or_else(|| path.to_owned())
        .display()
        .to_string()
}

/// Resolves `.` and `..` without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let (name, text, file) = self.locate(source, path, pos)?;
        if let Some(module) = self.cache.borrow().get(&name) {
            return Ok(module.clone());
        }
        {
            let mut sources = self.sources.borrow_mut();
            sources.texts.insert(name.clone(), text.clone());
            if let Some(file) = file.as_ref().filter(|file| !sources.files.contains(file)) {
                sources.files.push(file.clone());
            }
        }
        let mut ast = engine.compile(&text).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                name.clone(),
                Box::new(e.into()),
                pos,
            ))
        })?;
        ast.set_source(name.as_str());
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(name.clone(), e, pos)))?;
        let module: Shared<Module> = module.into();
        self.cache.borrow_mut().insert(name, module.clone());
        Ok(module)
    }
}
