-- Confirmed frauds by merchant, stamped with the time the fraud became KNOWN (label_time),
-- not the time it happened: the merchant fraud-rate feature counts only labels already known
-- at scoring time, so label delay cannot leak the future into training.
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='transaction_id',
        full_refresh=full_refresh_on_replay(),
        pre_hook="{{ delete_touched_fraud_labels() }}",
        post_hook="{{ record_gold_watermark(ref('fct_transactions'), ref('fct_labels')) }}",
    )
}}
{%- set since = gold_watermarks() %}
with

{% if since is not none %}

-- incremental: the transactions whose label or whose transaction arrived since the last build
-- (the pre-hook deletes their rows first: a label cleared since leaves none)
{{ touched_fraud_label_ids(since) }},

{% endif %}

labels as (

    select * from {{ ref('fct_labels') }}
    {% if since is not none %}
    where transaction_id in (select transaction_id from touched)
    {% endif %}

),

transactions as (

    select * from {{ ref('fct_transactions') }}
    {% if since is not none %}
    where transaction_id in (select transaction_id from touched)
    {% endif %}

),

final as (

    select

        ----------  ids
        labels.transaction_id,
        transactions.merchant_id,

        ---------- label
        labels.fraud_type,

        ---------- timestamps
        labels.label_time,
        transactions.event_time as transaction_time

    from labels
    inner join transactions
        on labels.transaction_id = transactions.transaction_id
    where labels.is_fraud

)

select * from final
