//! The dependency graph of a pipeline's tasks.
//!
//! ```text
//!   fetch ──► build ──► deploy          an edge P ──► C means "C depends on P":
//!      └────────────────►┘              C names P in runAfter, or uses $(tasks.P.results.…)
//! ```
//!
//! Only `spec.tasks` are nodes: `finally` tasks have no `runAfter` and run once every
//! task is done. The graph is built from whatever the spec says — names that do not
//! exist are ignored here and reported by validation — so the scheduler and the validator
//! share one notion of "depends on".

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::pipeline::PipelineTask;
use super::substitution::Target;

/// A dependency cycle, as the path `a -> b -> … -> a` where each task depends on the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle(pub Vec<String>);

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" -> "))
    }
}

/// The dependency graph of `spec.tasks`, nodes numbered in declaration order.
#[derive(Clone, Debug)]
pub struct Dag<'a> {
    names: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
    /// Sorted, without duplicates or self-edges.
    parents: Vec<Vec<usize>>,
    /// The parents whose results a task uses (a subset of `parents`), sorted.
    result_parents: Vec<Vec<usize>>,
}

impl<'a> Dag<'a> {
    pub fn new(tasks: &'a [PipelineTask]) -> Self {
        let names: Vec<&'a str> = tasks.iter().map(|t| t.name.as_str()).collect();
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            index.entry(*n).or_insert(i);
        }
        let mut parents = Vec::with_capacity(tasks.len());
        let mut result_parents = Vec::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            let mut ps: Vec<usize> = (t.run_after.iter())
                .filter_map(|name| index.get(name.as_str()).copied())
                .collect();
            let mut rs: Vec<usize> = t
                .targets()
                .filter_map(|target| match target {
                    Target::Result { task, .. } => index.get(task.as_str()).copied(),
                    _ => None,
                })
                .collect();
            ps.extend(&rs);
            for v in [&mut ps, &mut rs] {
                v.retain(|&p| p != i);
                v.sort_unstable();
                v.dedup();
            }
            parents.push(ps);
            result_parents.push(rs);
        }
        Dag {
            names,
            index,
            parents,
            result_parents,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: usize) -> &'a str {
        self.names[i]
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The tasks `i` depends on.
    pub fn parents(&self, i: usize) -> &[usize] {
        &self.parents[i]
    }

    /// Whether task `i` uses results of task `p`.
    pub fn uses_results_of(&self, i: usize, p: usize) -> bool {
        self.result_parents[i].binary_search(&p).is_ok()
    }

    /// Every task, parents before children; among tasks ready at the same time the one
    /// declared first comes first, so the order is deterministic.
    ///
    /// # Errors
    /// The first [`Cycle`] found when the graph is not acyclic.
    pub fn topological_order(&self) -> Result<Vec<usize>, Cycle> {
        let n = self.len();
        // Children as one flat list with offsets: `children[start[p]..start[p + 1]]`.
        let mut start = vec![0usize; n + 1];
        for ps in &self.parents {
            for &p in ps {
                start[p + 1] += 1;
            }
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut children = vec![0usize; start[n]];
        for (c, ps) in self.parents.iter().enumerate() {
            for &p in ps {
                children[fill[p]] = c;
                fill[p] += 1;
            }
        }
        let mut waiting: Vec<usize> = self.parents.iter().map(Vec::len).collect();
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for &c in &children[start[i]..start[i + 1]] {
                waiting[c] -= 1;
                if waiting[c] == 0 {
                    ready.push(Reverse(c));
                }
            }
        }
        if order.len() == n {
            Ok(order)
        } else {
            Err(self
                .find_cycle()
                .expect("a graph without a topological order has a cycle"))
        }
    }

    /// A cycle, if any: depth-first along "depends on" edges, in declaration order.
    pub fn find_cycle(&self) -> Option<Cycle> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut mark = vec![Mark::New; self.len()];
        for root in 0..self.len() {
            if mark[root] != Mark::New {
                continue;
            }
            // (node, next parent to visit); the stack is the current path.
            let mut stack = vec![(root, 0usize)];
            mark[root] = Mark::OnPath;
            while let Some(top) = stack.last_mut() {
                let node = top.0;
                if let Some(&p) = self.parents[node].get(top.1) {
                    top.1 += 1;
                    match mark[p] {
                        Mark::New => {
                            mark[p] = Mark::OnPath;
                            stack.push((p, 0));
                        }
                        Mark::OnPath => {
                            let from = stack.iter().position(|(n, _)| *n == p).unwrap_or(0);
                            let mut path: Vec<String> = stack[from..]
                                .iter()
                                .map(|(n, _)| self.names[*n].to_string())
                                .collect();
                            path.push(self.names[p].to_string());
                            return Some(Cycle(path));
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskflow::fixtures::mk_task as mk_ptask;

    #[test]
    fn topological_order_puts_parents_first_and_ties_in_declaration_order() {
        let tasks = vec![
            mk_ptask("deploy", &["build"]),
            mk_ptask("build", &["fetch"]),
            mk_ptask("lint", &[]),
            mk_ptask("fetch", &[]),
        ];
        let dag = Dag::new(&tasks);
        let order: Vec<&str> = dag
            .topological_order()
            .unwrap()
            .into_iter()
            .map(|i| dag.name(i))
            .collect();
        assert_eq!(order, ["lint", "fetch", "build", "deploy"]);
    }

    #[test]
    fn result_references_are_edges_too() {
        let mut deploy = mk_ptask("deploy", &[]);
        deploy.params = vec![crate::taskflow::Param::new(
            "image",
            "$(tasks.build.results.image)",
        )];
        let tasks = vec![mk_ptask("build", &[]), deploy];
        let dag = Dag::new(&tasks);
        assert_eq!(dag.parents(1), &[0]);
        assert!(dag.uses_results_of(1, 0));
    }

    #[test]
    fn a_cycle_is_reported_as_its_path() {
        let tasks = vec![
            mk_ptask("a", &["c"]),
            mk_ptask("b", &["a"]),
            mk_ptask("c", &["b"]),
            mk_ptask("d", &[]),
        ];
        let cycle = Dag::new(&tasks).topological_order().unwrap_err();
        assert_eq!(cycle.to_string(), "a -> c -> b -> a");
    }

    #[test]
    fn unknown_names_and_self_references_are_not_edges() {
        let tasks = vec![mk_ptask("a", &["a", "ghost"])];
        let dag = Dag::new(&tasks);
        assert!(dag.parents(0).is_empty());
        assert_eq!(dag.topological_order(), Ok(vec![0]));
    }
}
