{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='user_id',
        full_refresh=full_refresh_on_replay(),
        post_hook="{{ record_gold_watermark(ref('fct_transactions'), none, ref('fct_account_events')) }}",
    )
}}
{%- set since = gold_watermarks() %}
with

{% if since is not none %}

-- incremental: every value is over the user's whole history, recomputed for the users with a
-- transaction or an account event ingested since the last build
touched_users as (

    select user_id from {{ ref('fct_transactions') }}
    where ingested_at > {{ since.transactions }}

    union

    select user_id from {{ ref('fct_account_events') }}
    where ingested_at > {{ since.account_events }}

),

{% endif %}

transactions as (

    select * from {{ ref('fct_transactions') }}
    {% if since is not none %}
    where user_id in (select user_id from touched_users)
    {% endif %}

),

account_events as (

    select * from {{ ref('fct_account_events') }}
    {% if since is not none %}
    where user_id in (select user_id from touched_users)
    {% endif %}

),

activity as (

    select user_id, device_id, event_time from transactions
    union all
    select user_id, device_id, event_time from account_events

),

user_activity as (

    select
        user_id,
        min(event_time) as first_seen_at,
        max(event_time) as last_seen_at,
        count(distinct device_id) as n_devices

    from activity
    group by user_id

),

user_transactions as (

    select
        user_id,
        count(*) as n_transactions,
        count(distinct card_id) as n_cards

    from transactions
    group by user_id

),

user_account_events as (

    select
        user_id,
        count(*) as n_account_events

    from account_events
    group by user_id

),

user_countries as (

    select
        user_id,
        country,
        count(*) as txn_count,
        min(event_time) as first_txn_at

    from transactions
    group by user_id, country

),

home_countries as (

    -- most frequent transaction country; ties go to the country used first, then by code
    select
        user_id,
        country as home_country

    from user_countries

    qualify row_number() over (
        partition by user_id
        order by txn_count desc, first_txn_at, country
    ) = 1

),

final as (

    select
        user_activity.user_id,
        user_activity.first_seen_at,
        user_activity.last_seen_at,
        home_countries.home_country,
        coalesce(user_transactions.n_cards, 0) as n_cards,
        user_activity.n_devices,
        coalesce(user_transactions.n_transactions, 0) as n_transactions,
        coalesce(user_account_events.n_account_events, 0) as n_account_events

    from user_activity
    left join user_transactions
        on user_activity.user_id = user_transactions.user_id
    left join user_account_events
        on user_activity.user_id = user_account_events.user_id
    left join home_countries
        on user_activity.user_id = home_countries.user_id

)

select * from final
