-- depends_on: {{ ref('fct_transactions') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_date',
        full_refresh=full_refresh_on_replay(),
        post_hook="{{ record_gold_watermark(ref('fct_transactions'), ref('fct_labels')) }}",
    )
}}
{%- set since = gold_watermarks() %}
with

{% if since is not none %}

-- incremental: recompute whole days, those with a transaction or a label change since the last build
touched_dates as (

    select event_date from {{ ref('fct_transactions') }}
    where ingested_at > {{ since.transactions }}

    union

    select transactions.event_date
    from {{ ref('fct_labels') }} as labels
    inner join {{ ref('fct_transactions') }} as transactions
        on labels.transaction_id = transactions.transaction_id
    where labels.ingested_at > {{ since.labels }}

),

{% endif %}

transactions as (

    select * from {{ ref('fct_transactions') }}
    {% if since is not none %}
    where event_date in (select event_date from touched_dates)
    {% endif %}

),

labels as (

    select * from {{ ref('fct_labels') }}

),

final as (

    select
        transactions.merchant_id,
        transactions.event_date,
        count(*) as txn_count,
        -- exact decimal sum: a float sum depends on row order, a replay must not
        cast(sum(cast(transactions.amount as decimal(38, 6))) as double) as amount_sum,
        count(distinct transactions.card_id) as distinct_cards,
        count(labels.transaction_id) as labelled_count,
        count(*) filter (where labels.is_fraud) as labelled_fraud_count,
        timezone('UTC', cast(transactions.event_date + interval 1 day as timestamp)) as window_end_at

    from transactions
    left join labels
        on transactions.transaction_id = labels.transaction_id

    group by transactions.merchant_id, transactions.event_date

)

select * from final
