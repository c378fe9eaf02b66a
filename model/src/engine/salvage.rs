//! **[stormcell]** What a device answers for an operator's thaw beyond a snapshot
//! (PROTOCOL.md 12, "Thaw and salvage"): ancestry questions about its commit graph, and
//! salvage bundles of refs the thaw is about to discard.

use std::collections::BTreeMap;

use super::Engine;
use crate::error::ClusterError;
use crate::ids::{Oid, RepoId};
use crate::ports::SalvageBundle;
use crate::wire::AncestryQuery;

impl Engine {
    /// Answers each query from the working copy's commit graph, in order. Holds the copy
    /// shared, so no mirror or push moves it while the answers are read.
    pub async fn ancestry_for_peer(
        &self,
        repo: &RepoId,
        queries: &[AncestryQuery],
    ) -> Result<Vec<bool>, ClusterError> {
        let _guard = self.local.shared(repo).await;
        let mut answers = Vec::with_capacity(queries.len());
        for q in queries {
            answers.push(
                self.ports
                    .store
                    .is_ancestor(repo, &q.ancestor, &q.descendant)
                    .await?,
            );
        }
        Ok(answers)
    }

    /// Writes `refs` and their objects to the salvage bundle `label`, durably. The copy is
    /// held shared: a bundle reads objects, it moves no ref.
    pub async fn salvage_bundle_for_peer(
        &self,
        repo: &RepoId,
        label: &str,
        refs: &BTreeMap<String, Oid>,
    ) -> Result<SalvageBundle, ClusterError> {
        let _guard = self.local.shared(repo).await;
        let bundle = self
            .ports
            .store
            .write_salvage_bundle(repo, label, refs)
            .await?;
        self.ports.events.emit(crate::ports::Event::Note {
            text: format!(
                "salvage bundle of {} ref(s) of {repo} written to {}",
                bundle.refs.len(),
                bundle.location
            ),
        });
        Ok(bundle)
    }
}
