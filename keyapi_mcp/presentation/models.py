"""The condensed output models: the tools' `outputSchema` and `structuredContent`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ProductOut(BaseModel):
    product_id: str
    units_sold: int | None = Field(description="Estimated units sold through this video (total_video_sale_cnt).")
    gmv: float | None = Field(
        description="Estimated GMV through this video (total_video_sale_gmv_amt). Currency not stated upstream."
    )
    avg_price: float | None = Field(description="gmv / units_sold; null when 0 units.")
    units_per_1k_views: float | None
    gmv_per_1k_views: float | None


class VideoOut(BaseModel):
    video_id: str
    author_id: str | None
    region: str | None
    created_at: str | None = Field(description="ISO 8601 UTC, from create_time.")
    duration_s: int | None
    views: int | None
    likes: int | None
    comments: int | None
    shares: int | None
    favorites: int | None
    engagement_rate: float | None = Field(description="(likes+comments+shares+favorites)/views; null when 0 views.")
    units_sold: int = Field(description="Sum over this video's products.")
    gmv: float = Field(description="Sum over this video's products, exact to the cent.")
    gmv_share_pct: float | None = Field(
        default=None, description="THIS VIDEO's share of the answer's total GMV (all its videos) in %."
    )
    gmv_per_1k_views: float | None = Field(default=None, description="gmv × 1000 / views; null when 0 views.")
    units_per_1k_views: float | None = Field(default=None, description="units_sold × 1000 / views.")
    avg_price: float | None = Field(default=None, description="gmv / units_sold; null when 0 units.")
    products: list[ProductOut]
    source: Literal["upstream", "cache"] = Field(description="Where this video's data came from in this call.")
    fetched_at: str = Field(description="When the upstream data was fetched (ISO 8601 UTC).")
    age_seconds: int | None = Field(
        default=None, description="How old this video's data was when answered, in seconds (see max_age_seconds)."
    )
    # Detailed only (absent from concise results):
    description: str | None = None
    hashtags: list[str] | None = None
    cover_url: str | None = None
    play_url: str | None = None
    width: int | None = None
    height: int | None = None
    ratio: str | None = None
    data_size: int | None = None


class TopProduct(BaseModel):
    product_id: str
    video_id: str
    units_sold: int | None
    gmv: float | None


class GroupTotal(BaseModel):
    """Totals of the videos sharing one region or one UTC creation day (group_by="product" only)."""

    key: str = Field(description='The region code or the UTC day (YYYY-MM-DD); "unknown" when not stated.')
    videos: int
    units_sold: int
    gmv: float = Field(description="Exact to the cent: summed in cents from the product rows.")
    gmv_share_pct: float | None = Field(default=None, description="Its share of the answer's total GMV in %.")


class ProductSplit(BaseModel):
    """One video's part of one product's sales across the answer's videos (group_by="product")."""

    video_id: str
    units_sold: int
    gmv: float
    units_share_pct: float | None = Field(description="This video's share of THIS PRODUCT's units in %.")
    gmv_share_pct: float | None = Field(description="This video's share of THIS PRODUCT's GMV in %.")


class ProductTotal(BaseModel):
    """One product across every video of the answer (group_by="product")."""

    product_id: str
    units_sold: int = Field(description="Sum over the videos selling it (missing values count as 0).")
    gmv: float = Field(description="Sum over the videos selling it, exact to the cent (summed in cents).")
    videos: int = Field(description="Number of videos selling it.")
    best_video_id: str = Field(description="The video with the most GMV for it (ties: more units, then lower id).")
    best_video_gmv: float
    gmv_share_pct: float | None = Field(
        description="THIS PRODUCT's share of the answer's total GMV (all products) in %; null when that is 0."
    )
    avg_price: float | None = Field(default=None, description="gmv / units_sold; null when 0 units.")
    views: int | None = Field(default=None, description="Sum of the views of the videos selling it.")
    gmv_per_1k_views: float | None = Field(default=None, description="gmv × 1000 / views.")
    units_per_1k_views: float | None = Field(default=None, description="units_sold × 1000 / views.")
    engagement_rate: float | None = Field(
        default=None, description="Interactions / views over the videos selling it; null when 0 views."
    )
    by_video: list[ProductSplit] | None = Field(
        default=None, description="Each video selling it, by GMV, with its share of THIS PRODUCT's units and GMV."
    )


class Summary(BaseModel):
    videos: int
    products: int = Field(description="Number of (video, product) rows.")
    distinct_products: int
    units_sold: int
    gmv: float
    top_products: list[TopProduct]
    # group_by="product" only (absent otherwise):
    by_region: list[GroupTotal] | None = None
    by_day: list[GroupTotal] | None = None


class Credits(BaseModel):
    spent: int = Field(description="Credits charged by this call (uncertain outcomes included).")
    cached_videos: int = Field(description="Videos answered from cache at no cost.")
    spent_today: int | None = Field(description="Null when the ledger could not be read (see warnings).")
    daily_limit: int | None = Field(description="Null when there is no daily limit.")
    remaining_today: int | None
    low_balance: str | None = Field(
        default=None,
        description="Present when today's remaining budget (daily or per-user) or the KeyAPI account is running "
        "out: what is left and what to do.",
    )


class VideoProductsResult(BaseModel):
    demo: bool
    complete: bool = Field(description="False when a limit or error stopped the page walk early.")
    next_page_num: int | None = Field(description="Call again with this page_num and pending_ids to continue.")
    pending_ids: list[str] = Field(description="Ids whose product list is not complete yet.")
    not_found: list[str] = Field(description="Requested ids with no product rows (only when complete).")
    videos: list[VideoOut]
    summary: Summary
    credits: Credits
    warnings: list[str]
    # group_by="product" only (absent otherwise): every product's totals, ranked by `sort_by` (GMV by default).
    product_totals: list[ProductTotal] | None = None
    videos_asked: int | None = Field(default=None, description="Distinct videos asked for in this call.")
    sort_by: str | None = Field(default=None, description="The measure lists are ranked by (highest first).")
    resources: list[str] = Field(
        default_factory=list,
        description="keyapi://videos/<id> of each answered video whose complete product list is cached: "
        "resources/read it for free while it stays cached.",
    )


class GroupProduct(BaseModel):
    product_id: str
    units_sold: int
    gmv: float
    videos: int = Field(description="Videos of the group selling it.")


class GroupStats(BaseModel):
    """One named group's totals and per-video averages (compare_video_groups)."""

    name: str
    videos: int = Field(description="Videos asked in this group.")
    videos_counted: int = Field(description="Of them, videos whose rows are in the answer: the averages' divisor.")
    videos_with_products: int
    units_sold: int
    gmv: float = Field(description="Exact to the cent.")
    gmv_per_video: float | None = Field(description="gmv / videos_counted, to the cent.")
    units_per_video: float | None
    views: int = Field(description="Sum of the views of its videos with products.")
    gmv_per_1k_views: float | None
    units_per_1k_views: float | None
    products: int = Field(description="Distinct products the group sells.")
    top_products: list[GroupProduct]


class GroupDifference(BaseModel):
    group: str
    baseline: str = Field(description="The group it is compared with (listed earlier in `groups`).")
    measure: str
    difference: float | None = Field(description="group minus baseline.")
    pct: float | None = Field(description="The difference in % of the baseline's value; null when that is 0.")


class GroupComparisonResult(BaseModel):
    demo: bool
    complete: bool = Field(description="False when a limit or error stopped the page walk early.")
    next_page_num: int | None
    pending_ids: list[str]
    not_found: list[str]
    videos: int = Field(description="Distinct videos over all groups (fetched once, as one set).")
    groups: list[GroupStats]
    differences: list[GroupDifference]
    shared_products: list[str] = Field(description="Products sold by at least two groups.")
    overlap: list[str] = Field(description="Videos asked in more than one group (counted in each).")
    credits: Credits
    warnings: list[str]
    sort_by: Literal["gmv", "units"] = Field(description="What each group's top products are ranked by.")
    partial_rows: int = Field(description="Product rows fetched so far for the pending videos (incomplete only).")


class LedgerEntryOut(BaseModel):
    at: str
    page: int | None
    ids: int
    status: int | None
    outcome: str
    charged: Literal["yes", "no", "uncertain"]
    request_id: str | None


class CallerUsage(BaseModel):
    """The calling user's own figures today (never another user's)."""

    caller: str = Field(description="Who the credits are booked for: the token's user or client, static, or local.")
    spent_today: int
    daily_limit: int | None = Field(description="KEYAPI_USER_DAILY_CREDIT_LIMIT; null = no per-user limit.")
    remaining_today: int | None
    uncertain_today: int


class CreditUsage(BaseModel):
    demo: bool
    spent_today: int
    daily_limit: int | None
    remaining_today: int | None
    max_credits_per_call: int
    max_credits_for_50_videos: int | None = Field(
        default=None,
        description="With KEYAPI_MAX_CREDITS_PER_CALL unset, the cap grows with the ids asked: the cap for 50.",
    )
    resets_at: str
    uncertain_today: int = Field(description="Credits counted as spent because the outcome was not seen.")
    saved_today: int = Field(description="Credits the cache saved today.")
    cached_videos: int
    recent: list[LedgerEntryOut] = Field(description="The caller's own last upstream requests, newest first.")
    you: CallerUsage | None = Field(
        default=None, description="The caller's own figures; present with a per-user limit or an identified caller."
    )
