//! The Cypress tree: map nodes, documents, scalar nodes, files and static tables with their
//! attributes, addressed by YPath (`//home/a/@attr`). Virtual subtrees (`//sys/exec_nodes`) are
//! served by the command layer, not stored here.

use crate::error::YtError;
use crate::ids;
use std::collections::BTreeMap;
use yson::{Map, Node, Value};

/// A parsed YPath: node names from the root, then an optional attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YPath {
    pub nodes: Vec<String>,
    /// `Some(vec![])` for `//a/@`, `Some(["x","y"])` for `//a/@x/y`.
    pub attribute: Option<Vec<String>>,
    /// `#<id>` at the start: `nodes` are relative to that object.
    pub object_id: Option<String>,
}

impl YPath {
    /// Parses `/`, `//a/b`, `//a/@`, `//a/@x/y`.
    pub fn parse(text: &str) -> Result<YPath, YtError> {
        let bad = |why: &str| {
            YtError::bad_request(format!("Malformed YPath {text:?}: {why}"))
                .with_attribute("path", Node::string(text))
        };
        let mut object_id = None;
        let rest = if text == "/" {
            ""
        } else if let Some(after) = text.strip_prefix('#') {
            let (id, rest) = after.split_once('/').unwrap_or((after, ""));
            if !crate::ids::is_yt_id(id) {
                return Err(bad("malformed object id"));
            }
            object_id = Some(id.to_string());
            rest
        } else {
            text.strip_prefix("//")
                .ok_or_else(|| bad("a path must start with \"//\" or \"#<id>\""))?
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut nodes = Vec::new();
        let mut attribute: Option<Vec<String>> = None;
        if !rest.is_empty() {
            for part in rest.split('/') {
                if let Some(attr) = &mut attribute {
                    if part.is_empty() {
                        return Err(bad("empty attribute path component"));
                    }
                    attr.push(part.to_string());
                } else if let Some(name) = part.strip_prefix('@') {
                    let mut attr = Vec::new();
                    if !name.is_empty() {
                        attr.push(name.to_string());
                    }
                    attribute = Some(attr);
                } else if part.is_empty() {
                    return Err(bad("empty node name"));
                } else {
                    nodes.push(part.to_string());
                }
            }
        }
        Ok(YPath {
            nodes,
            attribute,
            object_id,
        })
    }

    pub fn display_nodes(&self, count: usize) -> String {
        if count == 0 {
            "/".into()
        } else {
            format!("//{}", self.nodes[..count].join("/"))
        }
    }
}

/// What a node holds.
#[derive(Debug, Clone)]
pub enum Content {
    Map(BTreeMap<String, CypressNode>),
    /// A `document` node: any YSON value, navigable inside.
    Document(Node),
    /// A scalar or list node made by `set` (`string_node`, `int64_node`, `list_node`, ...).
    Scalar(Node),
    File(Vec<u8>),
    Table(Vec<Node>),
}

/// One node of the tree.
#[derive(Debug, Clone)]
pub struct CypressNode {
    pub id: String,
    pub content: Content,
    pub attributes: BTreeMap<String, Node>,
    pub creation_time: u64,
    pub modification_time: u64,
    /// Changes on every write of the node (its value or attributes), like the master's.
    pub revision: u64,
}

impl CypressNode {
    pub fn new(content: Content) -> Self {
        let now = ids::now_micros();
        CypressNode {
            id: ids::node_id(),
            content,
            attributes: BTreeMap::new(),
            creation_time: now,
            modification_time: now,
            revision: ids::next_revision(),
        }
    }

    /// Records a write: a new modification time and revision.
    fn touch(&mut self) {
        self.modification_time = ids::now_micros();
        self.revision = ids::next_revision();
    }

    fn empty_map() -> Self {
        Self::new(Content::Map(BTreeMap::new()))
    }

    /// Builds a node from a value written with `set`: maps become map nodes recursively.
    fn from_value(value: Node) -> Self {
        let mut node = match value.value {
            Value::Map(entries) => Self::new(Content::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, CypressNode::from_value(v)))
                    .collect(),
            )),
            other => Self::new(Content::Scalar(other.into())),
        };
        node.attributes.extend(value.attributes);
        node
    }

    pub fn type_name(&self) -> &'static str {
        match &self.content {
            Content::Map(_) => "map_node",
            Content::Document(_) => "document",
            Content::File(_) => "file",
            Content::Table(_) => "table",
            Content::Scalar(n) => match n.value {
                Value::String(_) => "string_node",
                Value::Int64(_) => "int64_node",
                Value::Uint64(_) => "uint64_node",
                Value::Double(_) => "double_node",
                Value::Boolean(_) => "boolean_node",
                Value::List(_) => "list_node",
                Value::Entity | Value::Map(_) => "entity",
            },
        }
    }

    /// A system or user attribute by name.
    pub fn attribute(&self, name: &str) -> Option<Node> {
        if let Some(v) = self.attributes.get(name) {
            return Some(v.clone());
        }
        let int = |i: usize| Some(Node::from(Value::Int64(i as i64)));
        match (name, &self.content) {
            ("type", _) => Some(Node::string(self.type_name())),
            ("id", _) => Some(Node::string(self.id.clone())),
            ("owner", _) => Some(Node::string("root")),
            ("creation_time", _) => Some(Node::string(ids::format_time(self.creation_time))),
            ("modification_time", _) => {
                Some(Node::string(ids::format_time(self.modification_time)))
            }
            ("revision", _) => Some(Value::Uint64(self.revision).into()),
            ("count", Content::Map(children)) => int(children.len()),
            ("row_count", Content::Table(rows)) => int(rows.len()),
            ("chunk_count", Content::Table(rows)) => int(usize::from(!rows.is_empty())),
            ("dynamic", Content::Table(_)) => Some(Value::Boolean(false).into()),
            ("sorted", Content::Table(_)) => Some(Value::Boolean(false).into()),
            ("schema", Content::Table(_)) => Some(Node {
                attributes: vec![
                    ("strict".into(), Value::Boolean(false).into()),
                    ("unique_keys".into(), Value::Boolean(false).into()),
                ],
                value: Value::List(Vec::new()),
            }),
            (
                "uncompressed_data_size" | "compressed_data_size" | "data_weight",
                Content::File(d),
            ) => int(d.len()),
            (
                "uncompressed_data_size" | "compressed_data_size" | "data_weight",
                Content::Table(rows),
            ) => int(rows.iter().map(|r| yson::to_text(r).len()).sum()),
            _ => None,
        }
    }

    fn system_attribute_names(&self) -> Vec<&'static str> {
        let mut names = vec![
            "type",
            "id",
            "owner",
            "creation_time",
            "modification_time",
            "revision",
        ];
        match &self.content {
            Content::Map(_) => names.push("count"),
            Content::Table(_) => names.extend([
                "row_count",
                "chunk_count",
                "dynamic",
                "sorted",
                "schema",
                "uncompressed_data_size",
                "compressed_data_size",
                "data_weight",
            ]),
            Content::File(_) => names.extend(["uncompressed_data_size", "compressed_data_size"]),
            _ => {}
        }
        names
    }

    /// All attributes as a map (for `get //x/@`).
    pub fn all_attributes(&self) -> Map {
        let mut out: Map = Vec::new();
        for name in self.system_attribute_names() {
            if !self.attributes.contains_key(name) {
                if let Some(v) = self.attribute(name) {
                    out.push((name.to_string(), v));
                }
            }
        }
        out.extend(self.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    fn requested_attributes(&self, names: &[String]) -> Map {
        names
            .iter()
            .filter_map(|n| self.attribute(n).map(|v| (n.clone(), v)))
            .collect()
    }

    /// The node's value for `get`: maps recurse, files and tables are opaque entities.
    pub fn to_value(&self, attributes: Option<&[String]>, depth_left: usize) -> Node {
        let mut value: Node = match &self.content {
            Content::Map(children) if depth_left > 0 => Node::map(
                children
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value(attributes, depth_left - 1)))
                    .collect(),
            ),
            Content::Map(_) => Node::entity(),
            Content::Document(v) | Content::Scalar(v) => v.clone(),
            Content::File(_) | Content::Table(_) => Node::entity(),
        };
        if let Some(names) = attributes {
            value.attributes = self.requested_attributes(names);
        } else if matches!(self.content, Content::Map(_)) && depth_left == 0 {
            value.attributes = vec![("opaque".into(), Value::Boolean(true).into())];
        }
        value
    }
}

/// Options of `create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub recursive: bool,
    pub ignore_existing: bool,
    pub force: bool,
    pub attributes: Map,
}

/// The tree.
#[derive(Debug)]
pub struct Cypress {
    root: CypressNode,
}

impl Default for Cypress {
    fn default() -> Self {
        Self::new()
    }
}

const MAX_GET_DEPTH: usize = 64;

impl Cypress {
    /// A tree with the usual top-level directories.
    pub fn new() -> Self {
        let mut root = CypressNode::empty_map();
        if let Content::Map(children) = &mut root.content {
            for name in ["home", "tmp", "sys"] {
                children.insert(name.to_string(), CypressNode::empty_map());
            }
        }
        Cypress { root }
    }

    fn resolve_error(path: &YPath, depth: usize) -> YtError {
        let parent = path.display_nodes(depth);
        let child = path.nodes.get(depth).cloned().unwrap_or_default();
        YtError::resolve(format!(
            "Error resolving path {}: Node {parent} has no child with key {child:?}",
            path.display_nodes(path.nodes.len())
        ))
        .with_attribute("path", Node::string(path.display_nodes(path.nodes.len())))
    }

    /// Rewrites a `#<id>/...` path into one from the root.
    pub fn resolve_object_id(&self, path: &YPath) -> Result<YPath, YtError> {
        let Some(id) = &path.object_id else {
            return Ok(path.clone());
        };
        fn find(node: &CypressNode, id: &str, trail: &mut Vec<String>) -> bool {
            if node.id == id {
                return true;
            }
            if let Content::Map(children) = &node.content {
                for (name, child) in children {
                    trail.push(name.clone());
                    if find(child, id, trail) {
                        return true;
                    }
                    trail.pop();
                }
            }
            false
        }
        let mut trail = Vec::new();
        if !find(&self.root, id, &mut trail) {
            return Err(YtError::resolve(format!("No such object #{id}"))
                .with_attribute("object_id", Node::string(id.clone())));
        }
        trail.extend(path.nodes.iter().cloned());
        Ok(YPath {
            nodes: trail,
            attribute: path.attribute.clone(),
            object_id: None,
        })
    }

    /// Walks to the deepest stored node; returns it and how many path components it consumed.
    fn walk<'a>(&'a self, path: &YPath) -> (&'a CypressNode, usize) {
        let mut node = &self.root;
        for (i, name) in path.nodes.iter().enumerate() {
            match &node.content {
                Content::Map(children) => match children.get(name) {
                    Some(child) => node = child,
                    None => return (node, i),
                },
                _ => return (node, i),
            }
        }
        (node, path.nodes.len())
    }

    fn node_mut(&mut self, path: &YPath, len: usize) -> Result<&mut CypressNode, YtError> {
        let mut node = &mut self.root;
        for (i, name) in path.nodes[..len].iter().enumerate() {
            node = match &mut node.content {
                Content::Map(children) => children
                    .get_mut(name)
                    .ok_or_else(|| Self::resolve_error(path, i))?,
                _ => return Err(Self::resolve_error(path, i)),
            };
        }
        Ok(node)
    }

    /// `get`.
    pub fn get(&self, path: &YPath, attributes: Option<&[String]>) -> Result<Node, YtError> {
        let (node, depth) = self.walk(path);
        let rest = &path.nodes[depth..];
        if !rest.is_empty() {
            // Inside a document or scalar value.
            return match &node.content {
                Content::Document(v) | Content::Scalar(v) if path.attribute.is_none() => v
                    .pointer(&rest.join("/"))
                    .cloned()
                    .ok_or_else(|| Self::resolve_error(path, depth)),
                _ => Err(Self::resolve_error(path, depth)),
            };
        }
        match &path.attribute {
            None => Ok(node.to_value(attributes, MAX_GET_DEPTH)),
            Some(attr) if attr.is_empty() => Ok(Node::map(node.all_attributes())),
            Some(attr) => {
                let value = node.attribute(&attr[0]).ok_or_else(|| {
                    YtError::resolve(format!(
                        "Error resolving path {}/@{}: Attribute {:?} is not found",
                        path.display_nodes(depth),
                        attr.join("/"),
                        attr[0]
                    ))
                })?;
                if attr.len() == 1 {
                    Ok(value)
                } else {
                    value.pointer(&attr[1..].join("/")).cloned().ok_or_else(|| {
                        YtError::resolve(format!(
                            "Error resolving path {}/@{}",
                            path.display_nodes(depth),
                            attr.join("/")
                        ))
                    })
                }
            }
        }
    }

    /// `list`: child names, each with the requested attributes.
    pub fn list(&self, path: &YPath, attributes: Option<&[String]>) -> Result<Vec<Node>, YtError> {
        let (node, depth) = self.walk(path);
        if depth < path.nodes.len() {
            return Err(Self::resolve_error(path, depth));
        }
        match &node.content {
            Content::Map(children) => Ok(children
                .iter()
                .map(|(name, child)| {
                    let mut n = Node::string(name.clone());
                    if let Some(names) = attributes {
                        n.attributes = child.requested_attributes(names);
                    }
                    n
                })
                .collect()),
            Content::Document(v) | Content::Scalar(v) => match v.as_map() {
                Some(m) => Ok(m.iter().map(|(k, _)| Node::string(k.clone())).collect()),
                None => Err(YtError::bad_request(format!(
                    "Cannot list {}: it is a {}",
                    path.display_nodes(depth),
                    node.type_name()
                ))),
            },
            _ => Err(YtError::bad_request(format!(
                "Cannot list {}: it is a {}",
                path.display_nodes(depth),
                node.type_name()
            ))),
        }
    }

    pub fn exists(&self, path: &YPath) -> bool {
        self.get(path, None).is_ok()
    }

    /// The stored node at exactly `path` (no attribute part).
    pub fn node(&self, path: &YPath) -> Result<&CypressNode, YtError> {
        let (node, depth) = self.walk(path);
        if depth < path.nodes.len() {
            return Err(Self::resolve_error(path, depth));
        }
        Ok(node)
    }

    /// Makes the parent map of `path` (creating map nodes when `recursive`) and returns it.
    fn parent_map(
        &mut self,
        path: &YPath,
        recursive: bool,
    ) -> Result<&mut BTreeMap<String, CypressNode>, YtError> {
        let parent_len = path.nodes.len() - 1;
        let mut node = &mut self.root;
        for (i, name) in path.nodes[..parent_len].iter().enumerate() {
            let Content::Map(children) = &mut node.content else {
                return Err(YtError::bad_request(format!(
                    "Cannot create a child of {}: it is not a map node",
                    path.display_nodes(i)
                )));
            };
            if !children.contains_key(name) {
                if !recursive {
                    return Err(Self::resolve_error(path, i));
                }
                children.insert(name.clone(), CypressNode::empty_map());
            }
            node = children
                .get_mut(name)
                .ok_or_else(|| Self::resolve_error(path, i))?;
        }
        match &mut node.content {
            Content::Map(children) => Ok(children),
            _ => Err(YtError::bad_request(format!(
                "Cannot create a child of {}: it is not a map node",
                path.display_nodes(parent_len)
            ))),
        }
    }

    /// `create`: returns the new (or existing, with `ignore_existing`) node id.
    pub fn create(
        &mut self,
        type_name: &str,
        path: &YPath,
        options: CreateOptions,
    ) -> Result<String, YtError> {
        if path.attribute.is_some() {
            return Err(YtError::bad_request("Cannot create an attribute; use set"));
        }
        if path.nodes.is_empty() {
            if options.ignore_existing {
                return Ok(self.root.id.clone());
            }
            return Err(YtError::already_exists("/"));
        }
        let content = match type_name {
            "map_node" => Content::Map(BTreeMap::new()),
            "document" => Content::Document(Node::map(Vec::new())),
            "file" => Content::File(Vec::new()),
            "table" => Content::Table(Vec::new()),
            "string_node" => Content::Scalar(Node::string("")),
            "int64_node" => Content::Scalar(Value::Int64(0).into()),
            "list_node" => Content::Scalar(Node::list(Vec::new())),
            other => {
                return Err(YtError::bad_request(format!(
                    "Object type {other:?} is not supported by the development cluster"
                ))
                .with_attribute("type", Node::string(other)))
            }
        };
        let display = path.display_nodes(path.nodes.len());
        let name = path.nodes[path.nodes.len() - 1].clone();
        let children = self.parent_map(path, options.recursive)?;
        if let Some(existing) = children.get(&name) {
            if options.ignore_existing && existing.type_name() == type_name {
                return Ok(existing.id.clone());
            }
            if !options.force {
                return Err(YtError::already_exists(&display));
            }
        }
        let mut node = CypressNode::new(content);
        for (k, v) in options.attributes {
            if k == "value" {
                if let Content::Document(d) = &mut node.content {
                    *d = v;
                    continue;
                }
            }
            node.attributes.insert(k, v);
        }
        let id = node.id.clone();
        children.insert(name, node);
        Ok(id)
    }

    /// `set`: replaces a node's value (creating it, recursively if asked), a value inside a
    /// document, or an attribute.
    pub fn set(
        &mut self,
        path: &YPath,
        value: Node,
        recursive: bool,
        force: bool,
    ) -> Result<(), YtError> {
        let (_, depth) = self.walk(path);
        if let Some(attr) = &path.attribute {
            if depth < path.nodes.len() {
                return Err(Self::resolve_error(path, depth));
            }
            let node = self.node_mut(path, depth)?;
            let Some((first, rest)) = attr.split_first() else {
                return Err(YtError::bad_request("Cannot set the whole attribute map"));
            };
            if rest.is_empty() {
                node.attributes.insert(first.clone(), value);
            } else {
                let slot = node
                    .attributes
                    .get_mut(first)
                    .ok_or_else(|| YtError::resolve(format!("Attribute {first:?} is not found")))?;
                set_inside(slot, rest, value)
                    .map_err(|_| YtError::resolve(format!("Cannot set @{}", attr.join("/"))))?;
            }
            node.touch();
            return Ok(());
        }
        if path.nodes.is_empty() {
            return Err(YtError::bad_request("Cannot replace the root"));
        }
        if depth < path.nodes.len() {
            // Into a document or scalar value?
            let display = path.display_nodes(path.nodes.len());
            let node = self.node_mut(path, depth)?;
            if let Content::Document(doc) = &mut node.content {
                let rest: Vec<String> = path.nodes[depth..].to_vec();
                set_inside(doc, &rest, value).map_err(|_| {
                    YtError::resolve(format!(
                        "Cannot set {display}: no such place in the document"
                    ))
                })?;
                node.touch();
                return Ok(());
            }
        }
        if depth == path.nodes.len() {
            let node = self.node_mut(path, depth)?;
            match &mut node.content {
                Content::Document(doc) => {
                    *doc = value;
                    node.touch();
                    return Ok(());
                }
                Content::File(_) | Content::Table(_) if !force => {
                    return Err(YtError::bad_request(format!(
                        "Cannot set {}: it is a {}; use force to replace it",
                        path.display_nodes(depth),
                        node.type_name()
                    )));
                }
                _ => {}
            }
        }
        let name = path.nodes[path.nodes.len() - 1].clone();
        let children = self.parent_map(path, recursive)?;
        children.insert(name, CypressNode::from_value(value));
        Ok(())
    }

    /// `remove`.
    pub fn remove(&mut self, path: &YPath, recursive: bool, force: bool) -> Result<(), YtError> {
        let (_, depth) = self.walk(path);
        if depth < path.nodes.len() {
            if force {
                return Ok(());
            }
            return Err(Self::resolve_error(path, depth));
        }
        if let Some(attr) = &path.attribute {
            let node = self.node_mut(path, depth)?;
            if let Some(first) = attr.first() {
                if node.attributes.remove(first).is_none() {
                    if !force {
                        return Err(YtError::resolve(format!(
                            "Attribute {first:?} is not found"
                        )));
                    }
                } else {
                    node.touch();
                }
            }
            return Ok(());
        }
        if path.nodes.is_empty() {
            return Err(YtError::bad_request("Cannot remove the root"));
        }
        let name = path.nodes[path.nodes.len() - 1].clone();
        let display = path.display_nodes(path.nodes.len());
        let children = self.parent_map(path, false)?;
        if let Some(CypressNode {
            content: Content::Map(c),
            ..
        }) = children.get(&name)
        {
            if !c.is_empty() && !recursive {
                return Err(YtError::bad_request(format!(
                    "Cannot remove non-empty composite node {display} without recursive"
                )));
            }
        }
        children.remove(&name);
        Ok(())
    }

    fn content_mut(&mut self, path: &YPath) -> Result<(&mut Content, String), YtError> {
        let display = path.display_nodes(path.nodes.len());
        let (_, depth) = self.walk(path);
        if depth < path.nodes.len() {
            return Err(Self::resolve_error(path, depth));
        }
        let node = self.node_mut(path, depth)?;
        node.touch();
        Ok((&mut node.content, display))
    }

    /// `write_file`: the file must exist (the client creates it first).
    pub fn write_file(&mut self, path: &YPath, data: &[u8], append: bool) -> Result<(), YtError> {
        let (content, display) = self.content_mut(path)?;
        match content {
            Content::File(bytes) => {
                if !append {
                    bytes.clear();
                }
                bytes.extend_from_slice(data);
                Ok(())
            }
            _ => Err(YtError::bad_request(format!("{display} is not a file"))),
        }
    }

    pub fn read_file(&self, path: &YPath) -> Result<&[u8], YtError> {
        match &self.node(path)?.content {
            Content::File(bytes) => Ok(bytes),
            _ => Err(YtError::bad_request(format!(
                "{} is not a file",
                path.display_nodes(path.nodes.len())
            ))),
        }
    }

    pub fn write_table(
        &mut self,
        path: &YPath,
        rows: Vec<Node>,
        append: bool,
    ) -> Result<(), YtError> {
        let (content, display) = self.content_mut(path)?;
        match content {
            Content::Table(existing) => {
                if !append {
                    existing.clear();
                }
                existing.extend(rows);
                Ok(())
            }
            _ => Err(YtError::bad_request(format!("{display} is not a table"))),
        }
    }

    pub fn read_table(&self, path: &YPath) -> Result<&[Node], YtError> {
        match &self.node(path)?.content {
            Content::Table(rows) => Ok(rows),
            _ => Err(YtError::bad_request(format!(
                "{} is not a table",
                path.display_nodes(path.nodes.len())
            ))),
        }
    }
}

fn set_inside(target: &mut Node, path: &[String], value: Node) -> Result<(), ()> {
    let Some((first, rest)) = path.split_first() else {
        *target = value;
        return Ok(());
    };
    match &mut target.value {
        Value::Map(entries) => {
            if let Some(slot) = entries.iter_mut().find(|(k, _)| k == first) {
                set_inside(&mut slot.1, rest, value)
            } else if rest.is_empty() {
                entries.push((first.clone(), value));
                Ok(())
            } else {
                Err(())
            }
        }
        Value::List(items) => {
            let index: usize = first.parse().map_err(|_| ())?;
            let slot = items.get_mut(index).ok_or(())?;
            set_inside(slot, rest, value)
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> YPath {
        YPath::parse(s).unwrap()
    }

    #[test]
    fn ypaths_parse() {
        assert_eq!(p("/").nodes.len(), 0);
        assert_eq!(p("//a/b").nodes, vec!["a", "b"]);
        assert_eq!(p("//a/@").attribute, Some(vec![]));
        assert_eq!(
            p("//a/@x/y").attribute,
            Some(vec!["x".to_string(), "y".to_string()])
        );
        assert_eq!(
            p("//sys/exec_nodes/127.0.0.1:9012").nodes[2],
            "127.0.0.1:9012"
        );
        assert!(YPath::parse("home").is_err());
        assert!(YPath::parse("//a//b").is_err());
    }

    #[test]
    fn create_get_set_remove() {
        let mut c = Cypress::new();
        c.create(
            "map_node",
            &p("//home/x/y"),
            CreateOptions {
                recursive: true,
                ..Default::default()
            },
        )
        .unwrap();
        let err = c
            .create("map_node", &p("//home/x/y"), CreateOptions::default())
            .unwrap_err();
        assert_eq!(err.code, crate::error::codes::ALREADY_EXISTS);
        assert!(c
            .create(
                "map_node",
                &p("//home/x/y"),
                CreateOptions {
                    ignore_existing: true,
                    ..Default::default()
                }
            )
            .is_ok());
        let err = c.get(&p("//home/nope"), None).unwrap_err();
        assert_eq!(err.code, crate::error::codes::RESOLVE);
        assert!(err.message.contains("has no child"), "{}", err.message);
        c.set(&p("//home/x/@color"), Node::string("red"), false, false)
            .unwrap();
        assert_eq!(
            c.get(&p("//home/x/@color"), None).unwrap().as_str(),
            Some("red")
        );
        assert_eq!(
            c.get(&p("//home/x/@type"), None).unwrap().as_str(),
            Some("map_node")
        );
        c.set(
            &p("//home/v"),
            yson::parse(b"{a={b=1}}").unwrap(),
            false,
            false,
        )
        .unwrap();
        assert_eq!(c.get(&p("//home/v/a/b"), None).unwrap().as_i64(), Some(1));
        assert_eq!(
            c.get(&p("//home/v/a/b/@type"), None).unwrap().as_str(),
            Some("int64_node")
        );
        let names = c.list(&p("//home"), None).unwrap();
        assert_eq!(names.len(), 2);
        assert!(c.remove(&p("//home/x"), false, false).is_err());
        c.remove(&p("//home/x"), true, false).unwrap();
        assert!(!c.exists(&p("//home/x")));
        c.remove(&p("//home/x"), false, true).unwrap();
    }

    #[test]
    fn documents_files_tables() {
        let mut c = Cypress::new();
        c.create("document", &p("//home/d"), CreateOptions::default())
            .unwrap();
        c.set(
            &p("//home/d"),
            yson::parse(b"{k=[1;2]}").unwrap(),
            false,
            false,
        )
        .unwrap();
        assert_eq!(c.get(&p("//home/d/k/1"), None).unwrap().as_i64(), Some(2));
        c.create("file", &p("//home/f"), CreateOptions::default())
            .unwrap();
        c.write_file(&p("//home/f"), b"abc", false).unwrap();
        c.write_file(&p("//home/f"), b"def", true).unwrap();
        assert_eq!(c.read_file(&p("//home/f")).unwrap(), b"abcdef");
        c.create("table", &p("//home/t"), CreateOptions::default())
            .unwrap();
        c.write_table(&p("//home/t"), vec![yson::parse(b"{a=1}").unwrap()], false)
            .unwrap();
        assert_eq!(
            c.get(&p("//home/t/@row_count"), None).unwrap().as_i64(),
            Some(1)
        );
        assert!(c.get(&p("//home/t"), None).unwrap().is_entity());
    }
}
