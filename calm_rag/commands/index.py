"""``calm-rag index build|query|info|verify|keys|list``: wrappers over calm_rag.retrieval."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from calm_rag.commands.common import add_index_dir_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index", help="build, query and inspect retrieval indexes",
        description="FAISS indexes over corpora, described by YAML specs in indexes/.")
    actions = parser.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="build an index from its spec",
                               description="Chunk, embed and index a corpus into "
                                           "INDEX_DIR/<name>/. A killed build resumes; an "
                                           "up-to-date index is kept.")
    build.add_argument("spec", type=Path, metavar="SPEC", help="index spec (YAML)")
    add_index_dir_option(build, old_name="--out-dir")  # --out-dir: the old name, still read
    build.add_argument("--force", action="store_true",
                       help="rebuild even if the index exists (the old one stays until done)")
    build.add_argument("--keep-embeddings", action="store_true",
                       help="keep the embedding shards in INDEX_DIR/.cache/ after the build")
    build.set_defaults(func=run_build)

    query = actions.add_parser("query", help="search an index",
                               description="Print the top passages for a query.")
    query.add_argument("name", metavar="NAME", help="index name, folder or spec")
    query.add_argument("text", metavar="TEXT", help="the query")
    query.add_argument("--k", type=int, default=5, help="passages to show (default: %(default)s)")
    query.add_argument("--lang", metavar="xx", help="only passages in this language")
    query.add_argument("--policy", default="native",
                       help="native, pivot or fused (pivot and fused need --pivot)")
    query.add_argument("--pivot", metavar="TEXT",
                       help="the parallel English query (for an English query: itself)")
    query.add_argument("--hybrid", action="store_true", help="fuse BM25 with dense results")
    query.add_argument("--embedder", metavar="NAME",
                       help="fail unless the index was built with this embedder")
    query.add_argument("--json", action="store_true", help="one JSON object a hit")
    add_index_dir_option(query)
    query.set_defaults(func=run_query)

    info = actions.add_parser("info", help="show an index's manifest")
    info.add_argument("name", metavar="NAME", help="index name, folder or spec")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    add_index_dir_option(info)
    info.set_defaults(func=run_info)

    verify = actions.add_parser(
        "verify", help="check every file of an index against its manifest's SHA-256",
        description="Read every file of a built index and compare its size and SHA-256 with "
                    "the manifest, and record that it was checked: opening an index hashes "
                    "its files again only when one changed since (size, mtime, inode or "
                    "ctime).")
    verify.add_argument("name", metavar="NAME", help="index name, folder or spec")
    add_index_dir_option(verify)
    verify.set_defaults(func=run_verify)

    keys = actions.add_parser("keys", help="the manual of an index spec's YAML keys")
    keys.set_defaults(func=run_keys)

    listing = actions.add_parser("list", help="list index specs and built indexes")
    add_index_dir_option(listing)
    listing.set_defaults(func=run_list)


def run_build(args: argparse.Namespace) -> int:
    from calm_rag.retrieval.build import build_index
    from calm_rag.retrieval.catalog import default_index_dir
    from calm_rag.retrieval.spec import load_spec

    spec = load_spec(args.spec)
    result = build_index(spec, args.index_dir or default_index_dir(), force=args.force,
                         keep_embeddings=args.keep_embeddings)
    if not result.built:
        print(f"{result.path}: up to date (use --force to rebuild)")
    else:
        print(f"{result.path}: {result.chunks} chunks in {result.seconds:.1f} s "
              f"({result.embedded_shards} shards embedded, {result.reused_shards} reused)")
    return 0


def run_query(args: argparse.Namespace) -> int:
    from calm_rag.errors import InputError
    from calm_rag.retrieval.policies import uses_pivot
    from calm_rag.retrieval.retriever import Retriever

    if args.k <= 0:
        raise InputError("must be positive", field="--k")
    if not args.pivot and uses_pivot(args.policy):
        # Without it the policy would search the native query alone, under another name.
        raise InputError(f"policy {args.policy} searches the English pivot query: give it",
                         field="--pivot", hint="--pivot 'the question in English' (for an "
                         "English query, the query itself), or --policy native")
    retriever = Retriever.open(args.name, index_dir=args.index_dir, embedder=args.embedder)
    hits = retriever.retrieve(args.text, lang=args.lang, k=args.k, policy=args.policy,
                              pivot_query=args.pivot, hybrid=args.hybrid)
    for hit in hits:
        if args.json:
            print(json.dumps(hit.to_dict(), ensure_ascii=False))
            continue
        chunk = hit.chunk
        print(f"{hit.rank}. [{hit.score:.4f}] {chunk.id} ({chunk.lang}) {chunk.title}")
        print(f"   {' '.join(chunk.text.split())[:300]}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from calm_rag.retrieval import manifest as mf
    from calm_rag.retrieval.catalog import locate_index

    folder = locate_index(args.name, args.index_dir)
    manifest = mf.read_manifest(folder)
    mf.verify_files(folder, manifest, checksums=False)
    print(mf.dumps(manifest) if args.json else f"folder:     {folder}\n{mf.summary(manifest)}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from calm_rag.retrieval import integrity
    from calm_rag.retrieval import manifest as mf
    from calm_rag.retrieval.catalog import locate_index

    folder = locate_index(args.name, args.index_dir)
    manifest = mf.read_manifest(folder)
    mf.verify_files(folder, manifest, checksums=False)  # a missing or cut file, named at once
    unrecorded = integrity.verify(folder, manifest)
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    print(f"{folder}: {len(manifest['files'])} files, {total} bytes, checksums match; "
          + (f"recorded in {integrity.stamp_path(folder)}" if unrecorded is None
             else f"not recorded ({unrecorded}), so the next open hashes them again"))
    return 0


def run_keys(args: argparse.Namespace) -> int:
    from calm_rag.config import describe
    from calm_rag.retrieval.spec import IndexSpec

    print("\n".join(describe(IndexSpec)))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from calm_rag.retrieval.catalog import default_index_dir, list_indexes

    index_dir = args.index_dir or default_index_dir()
    entries = list_indexes(index_dir)
    if not entries:
        print(f"no index specs or built indexes in {index_dir}")
        return 0
    rows = [("NAME", "STATUS", "CHUNKS", "EMBEDDER", "FAISS", "DESCRIPTION")]
    rows += [(e.name, e.status, "-" if e.chunks is None else str(e.chunks), e.embedder or "-",
              e.factory or "-", e.description) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for *cells, last in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=True)), last]))
    return 0
