//! `hallmark-server agent list | show | evict | ban | unban`.

use clap::{Args, Subcommand};
use hallmark_proto::admin::{Agent, AgentRequest, ListAgentsRequest};

use super::{AdminArgs, Output, print_json, rpc_error, timestamp};
use crate::cli::output::outln;

/// `agent` verbs.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List attested agents (and banned IDs not on record).
    List(ListArgs),
    /// Show one agent.
    Show(AgentArgs),
    /// Forget an agent: it must attest again.
    Evict(AgentArgs),
    /// Ban an agent: it cannot attest again until unbanned. An agent that is
    /// not on record (evicted, or not attested yet) can be banned too.
    Ban(AgentArgs),
    /// Lift a ban; the agent must attest again.
    Unban(AgentArgs),
}

/// Flags of `agent list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only agents attested with this node attestor.
    #[arg(long, value_parser = ["join_token", "x509pop"])]
    pub attestor: Option<String>,
    /// Only banned agents.
    #[arg(long)]
    pub banned: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of the verbs that name one agent.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's SPIFFE ID (`spiffe://<td>/hallmark/agent/...`).
    pub spiffe_id: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

fn agent_json(agent: &Agent) -> serde_json::Value {
    serde_json::json!({
        "spiffe_id": agent.spiffe_id,
        "attestor": agent.attestor,
        "node_id": agent.node_id,
        "banned": agent.banned,
        "first_attested_at": agent.first_attested_at,
        "last_attested_at": agent.last_attested_at,
        "svid_serial": agent.svid_serial,
        "svid_expires_at": agent.svid_expires_at,
    })
}

fn print_agent(agent: &Agent) -> anyhow::Result<()> {
    outln!("SPIFFE ID       : {}", agent.spiffe_id)?;
    if agent.attestor.is_empty() {
        outln!("Attestor        : - (banned while not on record)")?;
    } else {
        outln!("Attestor        : {}", agent.attestor)?;
    }
    outln!("Node ID         : {}", agent.node_id)?;
    outln!("Banned          : {}", agent.banned)?;
    outln!("Last attested   : {}", timestamp(agent.last_attested_at))?;
    outln!(
        "SVID serial     : {}",
        if agent.svid_serial.is_empty() {
            "-"
        } else {
            &agent.svid_serial
        }
    )?;
    outln!("SVID expires    : {}", timestamp(agent.svid_expires_at))?;
    Ok(())
}

/// Runs an `agent` command.
pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::List(args) => {
            let mut client = args.admin.client().await?;
            let mut agents = client
                .list_agents(ListAgentsRequest {})
                .await
                .map_err(|s| rpc_error("agent list", s))?
                .into_inner()
                .agents;
            agents.retain(|agent| {
                args.attestor.as_ref().is_none_or(|a| *a == agent.attestor)
                    && (!args.banned || agent.banned)
            });
            match args.output {
                Output::Json => print_json(&serde_json::json!({
                    "agents": agents.iter().map(agent_json).collect::<Vec<_>>(),
                })),
                Output::Text => {
                    outln!(
                        "Found {} attested agent{}",
                        agents.len(),
                        if agents.len() == 1 { "" } else { "s" }
                    )?;
                    for agent in &agents {
                        outln!()?;
                        print_agent(agent)?;
                    }
                    Ok(())
                }
            }
        }
        AgentCommand::Show(args) => show(args).await,
        AgentCommand::Evict(args) => one(args, "evict").await,
        AgentCommand::Ban(args) => one(args, "ban").await,
        AgentCommand::Unban(args) => one(args, "unban").await,
    }
}

async fn show(args: AgentArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let agents = client
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(|s| rpc_error("agent show", s))?
        .into_inner()
        .agents;
    let Some(agent) = agents.iter().find(|a| a.spiffe_id == args.spiffe_id) else {
        anyhow::bail!(
            "agent show: no agent {} on record (`hallmark-server agent list` lists them)",
            args.spiffe_id
        );
    };
    match args.output {
        Output::Json => print_json(&agent_json(agent)),
        Output::Text => print_agent(agent),
    }
}

async fn one(args: AgentArgs, verb: &str) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let request = AgentRequest {
        spiffe_id: args.spiffe_id.clone(),
    };
    let what = format!("agent {verb}");
    let agent = match verb {
        "evict" => client.evict_agent(request).await,
        "ban" => client.ban_agent(request).await,
        _ => client.unban_agent(request).await,
    }
    .map_err(|s| rpc_error(&what, s))?
    .into_inner();
    match args.output {
        Output::Json => print_json(&agent_json(&agent)),
        Output::Text => {
            let done = match verb {
                "evict" => "evicted",
                "ban" => "banned",
                _ => "unbanned",
            };
            outln!("Agent {} {done}", agent.spiffe_id)?;
            Ok(())
        }
    }
}
